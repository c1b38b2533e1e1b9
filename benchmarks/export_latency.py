"""Side by side: an exported model run by onnxruntime (and by PyTorch, TorchScript) against
`proxima perf`'s in-process inference of the same architecture, in one run on one machine.

Usage (benchmarks/export_latency.sh makes the model, the ONNX/TorchScript files and the venv):

    .export-venv/bin/python benchmarks/export_latency.py --onnx M.onnx --torchscript M.pt \
        [--samples 50] [--proxima target/release/proxima]

Workloads: EfficientNet-Lite0 + linear 128 head, L2-normalised, 128-px input, batch 1 (one crop,
the latency a `find` region or `/v1/identify` pays) and batch 32. Every runtime gets 2 threads, an
untimed warm-up, then the median of --samples calls on random input of the same shape. Preprocessing
(decode, resize) is not included in any column.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import time

import numpy as np
import onnxruntime as ort
import torch

THREADS = 2


def cpu_line() -> str:
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", "unknown CPU", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    amx = "yes" if "amx_bf16" in flags else "no"
    bf16 = "yes" if "avx512_bf16" in flags else "no"
    return f"CPU: {model}; {os.cpu_count()} logical cores; AMX-BF16 {amx}; AVX512-BF16 {bf16}"


def median_of(fn, samples: int) -> float:
    fn()
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--torchscript", required=True)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--proxima", default="target/release/proxima")
    a = ap.parse_args()
    torch.set_num_threads(THREADS)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(a.onnx, opts, providers=["CPUExecutionProvider"])
    module = torch.jit.load(a.torchscript, map_location="cpu")
    print(cpu_line())
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, {THREADS} threads, median of {a.samples}")
    print()
    print("| workload | proxima (libtorch, in process) | onnxruntime | torch.jit (TorchScript) | onnxruntime / proxima |")
    print("|---|---|---|---|---|")
    for batch in (1, 32):
        name = f"infer/efficientnet_lite0/size=128,batch={batch}"
        out = subprocess.run([a.proxima, "perf", "--only", name, "--samples", str(a.samples)], check=True, capture_output=True, text=True).stdout
        line = json.loads(out.strip().splitlines()[-1])
        if line.get("error"):
            raise SystemExit(f"proxima perf {name}: {line['error']}")
        px = line["median_s"]
        x = np.random.default_rng(0).random((batch, 3, 128, 128), dtype=np.float32)
        ox = median_of(lambda: session.run(["embeddings"], {"images": x}), a.samples)
        xt = torch.from_numpy(x)
        with torch.no_grad():
            tx = median_of(lambda: module(xt), a.samples)
        per = lambda s: f"{1000 * s:.2f} ms ({1000 * s / batch:.2f} ms/crop)"
        print(f"| {name} | {per(px)} | {per(ox)} | {per(tx)} | {ox / px:.2f}x |")


if __name__ == "__main__":
    main()
