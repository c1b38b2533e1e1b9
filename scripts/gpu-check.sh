#!/usr/bin/env bash
# GPU check, run ON the device machine (x86-64, NVIDIA GPU, PyTorch 2.11 in its python3, no Rust).
#
#   scripts/gpu-check.sh BUNDLE [PARITY_DIR]
#
# BUNDLE is what scripts/build-gpu-bundle.sh made (.gpu-bundle/): bin/proxima and
# bin/core-integration built with --features cuda, parity/ (the reference JSONs) and
# pytorch_train_step.py. PARITY_DIR defaults to BUNDLE/parity. libtorch comes from the machine's
# own PyTorch install (LD_LIBRARY_PATH = its torch/lib, which finds the CUDA libraries through its
# rpath). Steps, each under its own time limit (under 8 minutes in all):
#   1. nvidia-smi, and which libtorch/CUDA libraries the binary resolves;
#   2. the core parity tests (distances, losses + gradients, miners) with PROXIMA_TEST_DEVICE=cuda;
#   3. `proxima perf --device cuda --filter B=4096` (losses and miners at B=4096);
#   4. ResNet-18 training throughput, 224×224, batch 256, triplet loss, fp32 and bf16 autocast,
#      next to PyTorch eager on the same work (benchmarks/pytorch_train_step.py);
#   5. data-parallel training on CUDA against one process with the global batch (first step
#      losses within 1e-5, all within 1e-3): `--nproc 2` over Gloo through host memory (ranks
#      share the GPUs round-robin, so one GPU is enough), a world of one over NCCL, and two NCCL
#      ranks when there are two GPUs.
# Everything is tee'd to $OUT/gpu-check.log ($OUT defaults to ./gpu-check-out). Exit status 1
# when any step failed; the later steps still run.
set -uo pipefail
bundle=$(cd "${1:?usage: gpu-check.sh BUNDLE [PARITY_DIR]}" && pwd)
parity=$(cd "${2:-$bundle/parity}" && pwd)
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
exec > >(tee -a "$out/gpu-check.log") 2>&1

torch_dir=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))') || { echo "python3 cannot import torch"; exit 1; }
export LD_LIBRARY_PATH="$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
proxima="$bundle/bin/proxima"
failed=()
step() { echo; echo "=== $* [$(date +%T)]"; }
# run LIMIT_SECONDS NAME COMMAND...: runs with a time limit, records a failure, never aborts.
run() {
  local limit=$1 name=$2; shift 2
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "--- $name: exit $rc after $((SECONDS - start)) s"
  [[ $rc -eq 0 ]] || failed+=("$name (exit $rc)")
}

step "machine"
run 20 nvidia-smi nvidia-smi
python3 -c 'import torch; print("python torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
ldd "$proxima" | grep -E 'torch|c10|cuda|not found'
if ! ldd "$proxima" | grep -q 'libtorch_cuda.so'; then
  echo "proxima does not link libtorch_cuda.so: rebuild with --features cuda"
  failed+=("libtorch_cuda.so not linked")
fi

step "parity tests on cuda (PROXIMA_TEST_DEVICE=cuda, same tolerances as on the CPU)"
PROXIMA_TEST_DEVICE=cuda PROXIMA_PARITY_DIR="$parity" run 120 parity "$bundle/bin/core-integration" parity --nocapture

step "proxima perf --device cuda --filter B=4096"
run 120 perf-B4096 "$proxima" perf --device cuda --filter B=4096

step "ResNet-18 training steps, 224x224, batch 256, triplet loss (proxima, fp32 then bf16 autocast)"
run 75 train-fp32 "$proxima" perf --device cuda --only train/resnet18/size=224,batch=256 --samples 20
run 75 train-bf16 "$proxima" perf --device cuda --only train/resnet18-bf16/size=224,batch=256 --samples 20

step "the same in PyTorch eager: pytorch_train_step.py 224 256 20 16 cuda"
run 60 pytorch-reference python3 "$bundle/pytorch_train_step.py" 224 256 20 16 cuda

step "data-parallel training on cuda against one process (first step within 1e-5, all within 1e-3)"
ddp="$out/ddp"
rm -rf "$ddp" && mkdir -p "$ddp"
run 60 ddp-data "$proxima" data synth --brands 16 --per-brand 16 --size 64 --out "$ddp/data"
cat > "$ddp/ddp.toml" <<EOF
seed = 3
device = "cuda"
[data]
root = "$ddp/data"
image_size = 64
[split]
type = "ratio"
train = 0.75
val = 0.25
test = 0.0
[sampler]
m = 4
batch_size = 32
[model]
embedding_size = 64
backbone = { type = "resnet18" }
freeze_batch_norm = true
[loss]
type = "multi_similarity"
[miner]
type = "multi_similarity"
[optimizer]
type = "sgd"
lr = 0.01
[train]
epochs = 2
EOF
cat > "$ddp/compare.py" <<'PY'
import json, sys
steps = [[json.loads(l)["loss"] for l in open(p) if '"step"' in l] for p in sys.argv[1:]]
rel = [abs(a - b) / max(abs(a), 1.0) for a, b in zip(*steps)]
print(f"{len(rel)} steps each; relative step-loss differences {' '.join(f'{r:.1e}' for r in rel)}")
# The first step starts from the same weights (only the summation order differs); later ones
# drift as rounding differences grow through training, so they get a looser bound.
sys.exit(0 if len(steps[0]) == len(steps[1]) > 0 and rel[0] < 1e-5 and max(rel) < 1e-3 else 1)
PY
run 120 ddp-one "$proxima" train --config "$ddp/ddp.toml" --out "$ddp/one" --quiet
# Gloo through host memory, two ranks sharing the GPU(s).
PROXIMA_DIST_BACKEND=gloo run 120 ddp-gloo-2 "$proxima" train --config "$ddp/ddp.toml" --out "$ddp/gloo2" --quiet --nproc 2
run 20 ddp-gloo-2-compare python3 "$ddp/compare.py" "$ddp/one/log.jsonl" "$ddp/gloo2/log.jsonl"
# NCCL (c10d ProcessGroupNCCL): a world of one on one GPU exercises its construction and every
# collective; two ranks need two GPUs (NCCL refuses two ranks on one device).
RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29531 run 120 ddp-nccl-1 "$proxima" train --config "$ddp/ddp.toml" --out "$ddp/nccl1" --quiet
run 20 ddp-nccl-1-compare python3 "$ddp/compare.py" "$ddp/one/log.jsonl" "$ddp/nccl1/log.jsonl"
if [[ $(nvidia-smi -L | wc -l) -ge 2 ]]; then
  run 120 ddp-nccl-2 "$proxima" train --config "$ddp/ddp.toml" --out "$ddp/nccl2" --quiet --nproc 2
  run 20 ddp-nccl-2-compare python3 "$ddp/compare.py" "$ddp/one/log.jsonl" "$ddp/nccl2/log.jsonl"
else
  echo "one GPU: two-rank NCCL not checked"
fi

step "summary"
if [[ ${#failed[@]} -eq 0 ]]; then
  echo "all steps passed"
  exit 0
fi
printf 'FAILED: %s\n' "${failed[@]}"
exit 1
