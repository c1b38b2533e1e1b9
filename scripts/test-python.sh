#!/usr/bin/env bash
# Tests of the `proxima` Python package (python/): builds the wheel with maturin into a throwaway
# virtual environment, installs it there and runs python/tests with pytest. Called by
# scripts/test.sh; runs on its own too. Needs python3 (with venv) and PyPI for maturin, numpy, pytest.
# PROXIMA_CLI, when set to a built `proxima` binary, enables the gallery round trip through the CLI
# and, with PROXIMA_PYTHON (default .export-venv/bin/python), the ONNX Embedder tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check "maturin>=1.9.4,<2" numpy pytest "onnxruntime==1.32.0"
# The export step of tests/test_embedder.py runs in the Python of scripts/setup-export-venv.sh.
if [[ -z "${PROXIMA_PYTHON:-}" && -x "$root/.export-venv/bin/python" ]]; then export PROXIMA_PYTHON="$root/.export-venv/bin/python"; fi
# The wheel goes to the throwaway folder, not target/wheels; the build shares target/ with cargo.
"$tmp/venv/bin/maturin" build --release --quiet -m python/Cargo.toml -i "$py" -o "$tmp/wheels"
"$py" -m pip install --quiet --disable-pip-version-check --no-deps "$tmp"/wheels/proxima-*.whl
# Run from the temporary folder so `import proxima` is the installed wheel, not python/proxima.
cd "$tmp"
"$py" -m pytest -q -p no:cacheprovider "$root/python/tests"
