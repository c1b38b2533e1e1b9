#!/usr/bin/env bash
# Latency of an exported model (onnxruntime, TorchScript in PyTorch) beside proxima's own inference.
#
# Builds proxima, makes .export-venv (scripts/setup-export-venv.sh), then — unless MODEL names a
# model directory — trains a one-epoch EfficientNet-Lite0 embedding (128 px, pretrained weights from
# scripts/fetch-weights.sh) on synthetic logos into runs/export-bench (about a minute: the weights'
# values do not change the timing), exports it to ONNX and TorchScript, and runs
# benchmarks/export_latency.py, which prints the CPU model and a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/export-bench
scripts/setup-libtorch.sh
scripts/fetch-weights.sh
scripts/setup-export-venv.sh
if [ -z "${PROXIMA_SKIP_BUILD:-}" ]; then cargo build --release -p proxima-cli; fi
px=target/release/proxima
mkdir -p "$out"
model=${MODEL:-}
if [ -z "$model" ]; then
  model="$out/run"
  if [ ! -f "$model/model/model.json" ]; then
    "$px" data synth --brands 8 --per-brand 4 --size 128 --out "$out/synth"
    cat > "$out/exp.toml" <<TOML
seed = 0
device = "cpu"
[data]
root = "$out/synth"
image_size = 128
[split]
type = "ratio"
train = 0.5
val = 0.0
test = 0.5
[sampler]
m = 4
batch_size = 16
[model]
embedding_size = 128
backbone = { type = "efficientnet_lite0" }
pretrained = "$PWD/.weights/efficientnet-lite0-57934424.pth"
[loss]
type = "multi_similarity"
[optimizer]
type = "adam"
lr = 0.0001
[train]
epochs = 1
eval_every = 0
TOML
    "$px" train --config "$out/exp.toml" --out "$model" --quiet
  fi
fi
"$px" export --model "$model" --format onnx --out "$out/model.onnx"
"$px" export --model "$model" --format torchscript --out "$out/model.pt"
exec .export-venv/bin/python benchmarks/export_latency.py --onnx "$out/model.onnx" --torchscript "$out/model.pt" --proxima "$px" "$@"
