"""Side by side: proxima.AccuracyCalculator vs pytorch-metric-learning's, same data, same process.

Usage (run by hand, never in CI; needs torch, pytorch-metric-learning 2.9 and faiss-cpu, e.g. in
the ignored .peer-venv, plus the proxima wheel):
    python benchmarks/python_accuracy_side_by_side.py [--n 50000] [--dim 128] [--classes 1000]
        [--repeats 3] [--threads 2] [--k max_bin_count|None|<int>] [--proxima-only]

Data: n float32 embeddings around `classes` random centres (equal class sizes), evaluated against
themselves (reference=None: each query's own row excluded), the five k-NN metrics
(precision_at_1, r_precision, mean_average_precision_at_r, mean_average_precision,
mean_reciprocal_rank). k defaults to "max_bin_count": k=None (pytorch-metric-learning's default,
every reference) would need n x n neighbour lists (20 GB at n = 50 000) in both libraries.
The runs alternate (proxima, peer, proxima, peer, ...) so that load from other processes hits
both alike; the median wall time of each is reported, with the largest metric difference.
--proxima-only times proxima alone (e.g. k=None at n = 50 000, where the peer's one-shot
neighbour lists would need about 30 GB); the peak RSS of the process is reported too.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import time

KNN_METRICS = (
    "mean_average_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "precision_at_1",
    "r_precision",
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--k", default="max_bin_count")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--proxima-only", action="store_true")
    a = ap.parse_args()
    k = None if a.k == "None" else (a.k if a.k == "max_bin_count" else int(a.k))

    # Thread counts must be set before the libraries start their pools.
    os.environ.setdefault("RAYON_NUM_THREADS", str(a.threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import faiss
    import numpy as np
    import pytorch_metric_learning
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator as PeerCalculator

    import proxima

    torch.set_num_threads(a.threads)
    faiss.omp_set_num_threads(a.threads)

    rng = np.random.default_rng(a.seed)
    centres = rng.normal(size=(a.classes, a.dim)).astype(np.float32)
    labels = np.arange(a.n) % a.classes
    rng.shuffle(labels)
    x = (centres[labels] + 1.5 * rng.normal(size=(a.n, a.dim))).astype(np.float32)

    ours = proxima.AccuracyCalculator(include=KNN_METRICS, k=k)
    peer = PeerCalculator(include=KNN_METRICS, k=k, device=torch.device("cpu"))
    xt, lt = torch.from_numpy(x), torch.from_numpy(labels)

    names = ["proxima"] if a.proxima_only else ["proxima", "pytorch-metric-learning"]
    times = {name: [] for name in names}
    results = {}
    for _ in range(a.repeats):
        t = time.perf_counter()
        results["proxima"] = ours.get_accuracy(x, labels)
        times["proxima"].append(time.perf_counter() - t)
        if a.proxima_only:
            continue
        t = time.perf_counter()
        results["pytorch-metric-learning"] = peer.get_accuracy(xt, lt)
        times["pytorch-metric-learning"].append(time.perf_counter() - t)

    med = {name: statistics.median(v) for name, v in times.items()}
    diff = None if a.proxima_only else max(
        abs(results["proxima"][m] - results["pytorch-metric-learning"][m]) for m in KNN_METRICS)
    print(json.dumps({
        "n": a.n, "dim": a.dim, "classes": a.classes, "k": a.k, "threads": a.threads, "repeats": a.repeats,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "versions": {"proxima": proxima.__version__, "pytorch-metric-learning": pytorch_metric_learning.__version__,
                     "torch": torch.__version__, "faiss": faiss.__version__},
        "seconds": {name: [round(s, 3) for s in v] for name, v in times.items()},
        "median_seconds": {name: round(s, 3) for name, s in med.items()},
        "speedup": None if a.proxima_only else round(med["pytorch-metric-learning"] / med["proxima"], 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "max_metric_difference": diff,
        "metrics": {name: {m: round(v, 6) for m, v in r.items()} for name, r in results.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
