#!/usr/bin/env bash
# One line naming this machine's CPU for a benchmark's output: model name, family and model numbers
# (an "AMD EPYC" may be Zen 3, 4 or 5; speed claims count only against a peer on the same machine),
# cores, and whether it has AMX and AVX512-BF16 (each changes libtorch's fastest kernels).
set -euo pipefail
field() { grep -m1 "^$1[[:space:]]*:" /proc/cpuinfo | cut -d: -f2- | xargs; }
has() { grep -qw "$1" /proc/cpuinfo && echo yes || echo no; }
echo "== CPU: $(field 'model name'), family $(field 'cpu family') model $(field model), $(nproc) cores; AMX: $(has amx_tile), AVX512-BF16: $(has avx512_bf16)"
