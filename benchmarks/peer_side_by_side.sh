#!/usr/bin/env bash
# Side-by-side timing of pytorch-metric-learning (the peer) and `proxima perf` in one run.
#
# Makes .peer-venv/ (ignored by git) with the peer if it is absent, builds proxima in release,
# then runs benchmarks/peer_side_by_side.py with the given arguments (--samples, --rounds,
# --filter, --full). Prints a markdown table: workload | peer median | proxima median | ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.peer-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import pytorch_metric_learning, faiss, torchvision" 2>/dev/null; then
    python3 -m venv "$VENV"
    # torch 2.11 from PyPI (the CUDA build; it runs on the CPU here), the peer and faiss for its k-NN.
    "$VENV/bin/pip" install --quiet "torch==2.11.0" "torchvision==0.26.*" "pytorch-metric-learning==2.9.*" faiss-cpu
fi
if [ -z "${PROXIMA_SKIP_BUILD:-}" ]; then
    cargo build --release -p proxima-cli
fi
exec "$VENV/bin/python" benchmarks/peer_side_by_side.py "$@"
