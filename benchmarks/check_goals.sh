#!/usr/bin/env bash
# The check benchmark (see benchmarks/check_goals.py): the find benchmark's models and held-out
# pages (benchmarks/find_goals.sh runs first and skips every step whose output exists), each logo
# page checked on its brand's own domain and on a foreign one, each no-logo page on a foreign one.
#
#   benchmarks/check_goals.sh                 # OUT=runs/find-bench, as find_goals.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/find-bench}
if [ -z "${PROXIMA_SKIP_BUILD:-}" ]; then
    cargo build --release -p proxima-cli
fi
P=${PROXIMA:-target/release/proxima}
OUT="$OUT" PROXIMA="$P" PROXIMA_SKIP_BUILD=1 benchmarks/find_goals.sh
echo "== CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)" >&2
python3 benchmarks/check_goals.py --proxima "$P" --out "$OUT"
