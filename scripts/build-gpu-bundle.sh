#!/usr/bin/env bash
# Builds the CUDA variant here (no GPU needed to build) and packs what scripts/gpu-check.sh needs
# on a GPU machine into .gpu-bundle/ (git-ignored, kept under 64 MiB):
#   bin/proxima            `cargo build --release -p proxima-cli --features cuda`, stripped
#   bin/core-integration   proxima-core's integration tests (parity) with --features cuda, stripped
#   parity/                the reference JSONs of ../shared/parity (or $PROXIMA_PARITY_DIR), without
#                          the backbone weights, which these tests do not read
#   gpu-check.sh, pytorch_train_step.py
# Both binaries link libtorch_cuda.so, so they do not start on a machine without the CUDA
# libraries (this one); gpu-check.sh points them at the GPU machine's PyTorch install. They are
# built into their own target directory, target/cuda (a full build the first time, incremental
# after), so the default (CPU) target/release/proxima is never replaced, not even while this runs.
# Then, on the GPU machine: bash .gpu-bundle/gpu-check.sh .gpu-bundle
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup-libtorch.sh
bundle="$root/.gpu-bundle"
parity_src="${PROXIMA_PARITY_DIR:-$root/../shared/parity}"
limit_mib=64

export CARGO_TARGET_DIR="$root/target/cuda"
# The rpath of .cargo/config.toml one level deeper (target/cuda/release/<bin> and .../deps/<test>),
# so that these binaries find .libtorch like the default ones. RUSTFLAGS replaces the config's
# rustflags for this build only: adding the entries there would change every crate's fingerprint
# and rebuild the whole default target/ once.
export RUSTFLAGS='-C link-arg=-Wl,-rpath,$ORIGIN/../../../.libtorch/torch/lib -C link-arg=-Wl,-rpath,$ORIGIN/../../../../.libtorch/torch/lib'
cargo build --release -p proxima-cli --features cuda
# The test executable's path, from cargo's JSON messages (its name carries a hash).
tests_exe=$(cargo test --release -p proxima-core --features cuda --test integration --no-run --message-format=json \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "integration":
        print(m["executable"])')
[[ -n "$tests_exe" ]] || { echo "build-gpu-bundle: no test executable found" >&2; exit 1; }

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/parity"
cp "$CARGO_TARGET_DIR/release/proxima" "$bundle/bin/proxima"
cp "$tests_exe" "$bundle/bin/core-integration"
strip "$bundle/bin/proxima" "$bundle/bin/core-integration"
for bin in proxima core-integration; do
  readelf -d "$bundle/bin/$bin" | grep -q 'NEEDED.*\[libtorch_cuda.so\]' \
    || { echo "build-gpu-bundle: $bin does not link libtorch_cuda.so" >&2; exit 1; }
done
if [[ -d "$parity_src" ]]; then
  cp "$parity_src"/*.json "$bundle/parity/"
  [[ -f "$parity_src/README.md" ]] && cp "$parity_src/README.md" "$bundle/parity/"
else
  echo "build-gpu-bundle: warning: no parity data at $parity_src (gpu-check.sh needs a PARITY_DIR)" >&2
fi
cp scripts/gpu-check.sh benchmarks/pytorch_train_step.py "$bundle/"

size_kib=$(du -sk "$bundle" | cut -f1)
du -h "$bundle"/bin/* "$bundle/parity" | sed 's/^/  /'
echo "build-gpu-bundle: $bundle is $((size_kib / 1024)) MiB"
if (( size_kib > limit_mib * 1024 )); then
  echo "build-gpu-bundle: larger than $limit_mib MiB" >&2
  exit 1
fi
