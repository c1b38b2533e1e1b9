#!/usr/bin/env bash
# The README's first command: installs libtorch if needed, builds Proxima and runs `proxima demo`
# (synthetic logos → training → retrieval on unseen brands → gallery → report) into ./proxima-demo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup-libtorch.sh
cargo build --release -p proxima-cli
exec target/release/proxima demo "$@"
