"""Side-by-side timing: pytorch-metric-learning (the peer) against `proxima perf`, in one run.

Usage (from the repository root; `benchmarks/peer_side_by_side.sh` makes the venv first):

    .peer-venv/bin/python benchmarks/peer_side_by_side.py [--samples 5] [--rounds 1]
        [--filter TEXT] [--full] [--proxima target/release/proxima]

For every workload the peer and `proxima perf --only NAME` run alternately, each in a fresh
process, `--rounds` times; each run does one untimed warm-up call and then `--samples` timed
calls and reports their median. The table shows the median over rounds of those medians and
the ratio peer / proxima (above 1: proxima is faster).

What the peer runs (2 threads: torch.set_num_threads(2), faiss.omp_set_num_threads(2)):
- loss/<Name>/B=b,D=128: forward + backward of the loss on torch.randn(b, 128, requires_grad)
  with labels i // 8, configured as in `proxima perf` (crates/core/src/perf.rs).
- miner/<Name>/B=b,D=128: one miner call on the same kind of batch.
- eval/accuracy/N=n,D=128: AccuracyCalculator(include=(precision_at_1, r_precision,
  mean_average_precision_at_r), k="max_bin_count").get_accuracy(x, labels) with query =
  reference, on the same synthetic data as proxima (same generator, bit for bit). The
  default k=None would ask faiss for all N neighbours of every query (N² results: 30 GB at
  N = 50 000); "max_bin_count" is the library's own advice for R-Precision and MAP@R and is
  the same work proxima does.
- train/resnet18/size=s,batch=b: full SGD steps of benchmarks/pytorch_train_step.py's model
  and loss (needs torchvision).
- train/localiser-finetune/…, train/embed-efficientnet_lite0/… (with --full): the find recipe's
  localiser fine-tuning step and identification-embedding step, written in PyTorch in
  benchmarks/pytorch_find_steps.py with the same shapes, model, loss and optimiser as proxima's.
- train-data/resnet18/size=s,batch=b: the same steps, each taking its batch from
  pytorch_train_step.data_loader (ImageFolder + DataLoader, 2 workers) on the folder
  PROXIMA_PERF_DATA (default data/fl27/crops, written by `proxima data import flickrlogos27`);
  proxima reads the same folder with its own loader. A step's time includes waiting for data.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
THREADS = 2

# name -> (kind, component, config, size)
WORKLOADS = [
    ("eval/accuracy/N=10000,D=128", "eval", None, {}, 10000),
    ("eval/accuracy/N=50000,D=128", "eval", None, {}, 50000),
    ("loss/ContrastiveLoss/B=1024,D=128", "loss", "ContrastiveLoss", {}, 1024),
    ("miner/BatchHardMiner/B=1024,D=128", "miner", "BatchHardMiner", {}, 1024),
    ("loss/MultiSimilarityLoss/B=1024,D=128", "loss", "MultiSimilarityLoss", {}, 1024),
    ("loss/TripletMarginLoss/B=256,D=128", "loss", "TripletMarginLoss", {"margin": 0.1, "triplets_per_anchor": "all"}, 256),
    ("loss/CircleLoss/B=1024,D=128", "loss", "CircleLoss", {}, 1024),
    ("loss/TripletMarginLoss/B=1024,D=128", "loss", "TripletMarginLoss", {"margin": 0.1, "triplets_per_anchor": "all"}, 1024),
    ("miner/TripletMarginMiner/B=1024,D=128", "miner", "TripletMarginMiner", {"margin": 0.2, "type_of_triplets": "semihard"}, 1024),
    ("miner/MultiSimilarityMiner/B=1024,D=128", "miner", "MultiSimilarityMiner", {}, 1024),
    ("miner/BatchEasyHardMiner/B=1024,D=128", "miner", "BatchEasyHardMiner", {}, 1024),
    ("loss/NTXentLoss/B=256,D=128", "loss", "NTXentLoss", {}, 256),
]
# Slow on the peer (minutes per sample or several GB): only with --full.
FULL_ONLY = [
    ("loss/NTXentLoss/B=1024,D=128", "loss", "NTXentLoss", {}, 1024),
    ("loss/ContrastiveLoss/B=4096,D=128", "loss", "ContrastiveLoss", {}, 4096),
    ("loss/MultiSimilarityLoss/B=4096,D=128", "loss", "MultiSimilarityLoss", {}, 4096),
    ("loss/CircleLoss/B=4096,D=128", "loss", "CircleLoss", {}, 4096),
    ("train/resnet18/size=64,batch=32", "train", None, {}, (64, 32)),
    ("train-data/resnet18/size=64,batch=32", "train-data", None, {}, (64, 32)),
    # The find recipe's two training steps (benchmarks/pytorch_find_steps.py); --filter train/ runs them.
    ("train/localiser-finetune/size=384,batch=16,from=5", "find", "localiser", {}, None),
    ("train/embed-efficientnet_lite0/size=128,batch=32", "find", "embed", {}, None),
    # The same under bfloat16 autocast (torch.autocast on the peer's side, `localiser train --bf16`
    # and `[train] autocast_bf16` on proxima's): pays on CPUs with AMX-BF16 or AVX512-BF16.
    ("train/localiser-finetune-bf16/size=384,batch=16,from=5", "find", "localiser-bf16", {}, None),
    ("train/embed-efficientnet_lite0-bf16/size=128,batch=32", "find", "embed-bf16", {}, None),
]


def perf_data(n, d, seed=0):
    """The data of proxima_eval::perf_accuracy_runs, bit for bit (splitmix64 stream)."""
    import numpy as np

    classes = n // 10
    count = classes * d + n * d
    with np.errstate(over="ignore"):
        s = np.uint64(seed) + np.arange(1, count + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = s
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        u = ((z ^ (z >> np.uint64(31))) >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24) * np.float32(2.0) - np.float32(1.0)
    centres = u[: classes * d].reshape(classes, d)
    noise = u[classes * d:].reshape(n, d)
    labels = np.arange(n) % classes
    data = (centres[labels] + np.float32(1.6) * noise).astype(np.float32)
    return data, labels


def peer_call(kind, component, config, size):
    """Build the peer workload; returns a zero-argument callable doing one sample."""
    import torch

    torch.set_num_threads(THREADS)
    if kind == "eval":
        import faiss
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        faiss.omp_set_num_threads(THREADS)
        data, labels = perf_data(size, 128)
        calc = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"), k="max_bin_count", device=torch.device("cpu"))
        x = torch.from_numpy(data)
        y = torch.from_numpy(labels)
        return lambda: calc.get_accuracy(x, y)
    if kind == "find":
        sys.path.insert(0, HERE)
        from pytorch_find_steps import STEPS

        return STEPS[component][1]()
    if kind in ("train", "train-data"):
        sys.path.insert(0, HERE)
        import torchvision
        from pytorch_train_step import data_loader, triplet_loss

        s, b = size
        torch.manual_seed(0)
        trunk = torchvision.models.resnet18()
        trunk.fc = torch.nn.Identity()
        model = torch.nn.Sequential(trunk, torch.nn.Linear(512, 128))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(b, 3, s, s)
        labels = torch.arange(b) // 4

        if kind == "train-data":
            batches = data_loader(os.environ.get("PROXIMA_PERF_DATA", os.path.join(ROOT, "data", "fl27", "crops")), s, b)

            def data_step():
                xb, yb = next(batches)
                opt.zero_grad()
                triplet_loss(model(xb), yb).backward()
                opt.step()

            return data_step

        def step():
            opt.zero_grad()
            triplet_loss(model(x), labels).backward()
            opt.step()

        return step
    from pytorch_metric_learning import losses, miners

    b = size
    labels = torch.arange(b) // 8
    if kind == "loss":
        loss = getattr(losses, component)(**config)
        emb = torch.randn(b, 128, requires_grad=True)

        def one():
            emb.grad = None
            loss(emb, labels).backward()

        return one
    miner = getattr(miners, component)(**config)
    emb = torch.randn(b, 128)
    return lambda: miner(emb, labels)


def peer_child(name, samples):
    """Run one peer workload in this process and print its median (child mode)."""
    spec = next(w for w in WORKLOADS + FULL_ONLY if w[0] == name)
    call = peer_call(*spec[1:])
    call()  # warm-up
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    print(json.dumps({"workload": name, "median_s": statistics.median(times), "samples_s": times}))


def run_peer(name, samples):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--peer-child", name, "--samples", str(samples)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"peer {name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["median_s"]


def run_proxima(exe, name, samples):
    out = subprocess.run([exe, "perf", "--only", name, "--samples", str(samples)], capture_output=True, text=True)
    lines = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines or "median_s" not in lines[-1]:
        raise RuntimeError(f"proxima {name} failed:\n{out.stdout[-1000:]}{out.stderr[-2000:]}")
    return lines[-1]["median_s"]


def fmt(s):
    return f"{s:.3g} s" if s >= 0.001 else f"{s * 1000:.3g} ms"


def cpu_header() -> str:
    """The CPU model and the flags that change the ratios (AMX-BF16, AVX512-BF16, AVX-512F)."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    yes = lambda f: "yes" if f in flags else "no"
    return (f"CPU: {model}, {os.cpu_count()} logical cores; AMX-BF16 {yes('amx_bf16')}, AVX512-BF16 {yes('avx512_bf16')}, "
            f"AVX-512F {yes('avx512f')}, AVX2 {yes('avx2')}; k-NN candidate pass: {knn_unit(flags)}")


def knn_unit(flags):
    """The exact k-NN's candidate unit proxima picks on this CPU (crates/eval/src/knn/bf16.rs)."""
    if os.environ.get("PROXIMA_KNN_BF16") == "0":
        return "off (PROXIMA_KNN_BF16=0)"
    if "amx_bf16" in flags and "avx512f" in flags:
        return "AMX-BF16 (if Linux grants the tile state)"
    if "avx512_bf16" in flags and "avx512f" in flags:
        return "AVX512-BF16"
    if "avx2" in flags and "fma" in flags:
        return "AVX2 int16"
    return "none (fp32 GEMM)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1, help="peer/proxima alternations per workload")
    ap.add_argument("--filter", default=None)
    ap.add_argument("--full", action="store_true", help="also the slow B=4096 / training workloads")
    ap.add_argument("--proxima", default=os.path.join(ROOT, "target", "release", "proxima"))
    ap.add_argument("--peer-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer_child:
        peer_child(args.peer_child, args.samples)
        return
    import torch
    import pytorch_metric_learning

    todo = WORKLOADS + (FULL_ONLY if args.full else [])
    if args.filter:
        todo = [w for w in todo if args.filter in w[0]]
    print(cpu_header(), flush=True)
    print(f"peer: pytorch-metric-learning {pytorch_metric_learning.__version__}, torch {torch.__version__}, {THREADS} threads; "
          f"proxima: {args.proxima}; {args.samples} samples after a warm-up, {args.rounds} round(s), median shown; "
          f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}", flush=True)
    print("| workload | peer median | proxima median | ratio (peer/proxima) |")
    print("|---|---|---|---|", flush=True)
    for name, *_ in todo:
        peer, ours = [], []
        for _ in range(args.rounds):
            peer.append(run_peer(name, args.samples))
            ours.append(run_proxima(args.proxima, name, args.samples))
        p, o = statistics.median(peer), statistics.median(ours)
        print(f"| {name} | {fmt(p)} | {fmt(o)} | {p / o:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
