#!/usr/bin/env bash
# Makes .export-venv/ (ignored by git): the Python that `proxima export --format onnx` runs and the
# export tests use — torch (the same 2.11.0 as the project's libtorch), onnx and onnxruntime from
# PyPI. Idempotent: a stamp file records the versions; about a minute and 5 GB the first time.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.export-venv"
TORCH_VERSION=2.11.0
ONNX_VERSION=1.23.2
ORT_VERSION=1.32.0
stamp="$venv/.installed-torch-$TORCH_VERSION-onnx-$ONNX_VERSION-ort-$ORT_VERSION"
if [[ -f "$stamp" && -x "$venv/bin/python" ]]; then
  exit 0
fi
echo "setup-export-venv: installing torch $TORCH_VERSION, onnx $ONNX_VERSION, onnxruntime $ORT_VERSION into $venv" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" "onnx==$ONNX_VERSION" "onnxruntime==$ORT_VERSION" numpy
"$venv/bin/python" -c "import torch, onnx, onnxruntime" 
touch "$stamp"
echo "setup-export-venv: done" >&2
