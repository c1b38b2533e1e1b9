"""By hand, not in CI: proxima.AccuracyCalculator against pytorch-metric-learning 2.9's, live.

Usage: .peer-venv/bin/python benchmarks/python_accuracy_peer_check.py
(needs torch, pytorch-metric-learning==2.9.0, faiss-cpu and the proxima wheel in that venv).

Compares every k-NN metric for k in {None, "max_bin_count", 5} x {plain, avg_of_avgs,
return_per_class} x {reference=None, a separate reference, a reference that contains the queries
with ref_includes_query=True}, on random clustered data with labels missing from the reference,
and fails if any value differs by more than 1e-5. Prints NMI/AMI of both for information only:
the clusterings come from different k-means implementations (Proxima's seeded one vs faiss's).
"""

import warnings

import numpy as np
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator as PeerCalculator

import proxima

KNN = ("mean_average_precision", "mean_average_precision_at_r", "mean_reciprocal_rank", "precision_at_1",
       "r_precision")


def data(rng, n, classes, dim=16, spread=1.0):
    centres = rng.normal(size=(classes, dim))
    labels = rng.integers(0, classes, n)
    return (centres[labels] + spread * rng.normal(size=(n, dim))).astype(np.float32), labels


def main():
    warnings.filterwarnings("ignore")  # the peer warns when k < max bin count, as intended here
    rng = np.random.default_rng(1)
    worst, compared = 0.0, 0
    for k in [None, "max_bin_count", 5]:
        for mode in [{}, {"avg_of_avgs": True}, {"return_per_class": True}]:
            q, ql = data(rng, 300, 12)
            r, rl = data(rng, 500, 15)
            cases = [(q, ql, None, None, False), (q, ql, r, rl, False),
                     (q, ql, np.concatenate([q, r]), np.concatenate([ql, rl]), True)]
            for a, al, b, bl, includes in cases:
                ours = proxima.AccuracyCalculator(include=KNN, k=k, **mode).get_accuracy(
                    a, al, b, bl, ref_includes_query=includes)
                peer = PeerCalculator(include=KNN, k=k, device=torch.device("cpu"), **mode).get_accuracy(
                    torch.from_numpy(a), torch.from_numpy(al), None if b is None else torch.from_numpy(b),
                    None if bl is None else torch.from_numpy(bl), ref_includes_query=includes)
                for m in KNN:
                    x, y = np.asarray(ours[m]), np.asarray(peer[m])
                    assert x.shape == y.shape, f"k={k} {mode} ref_includes_query={includes} {m}: {x.shape} vs {y.shape}"
                    worst = max(worst, float(np.max(np.abs(x - y))))
                    compared += 1
    print(f"compared {compared} metric values; largest difference {worst:.3g}")
    assert worst <= 1e-5, "proxima and pytorch-metric-learning disagree"
    x, labels = data(rng, 400, 8, spread=0.3)
    print("NMI/AMI proxima:", proxima.AccuracyCalculator(include=("NMI", "AMI")).get_accuracy(x, labels))
    print("NMI/AMI peer:   ", PeerCalculator(include=("NMI", "AMI"), device=torch.device("cpu")).get_accuracy(
        torch.from_numpy(x), torch.from_numpy(labels)))


if __name__ == "__main__":
    main()
