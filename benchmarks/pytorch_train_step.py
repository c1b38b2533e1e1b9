"""Reference for Proxima's training throughput: PyTorch eager on the same model and batch.

Usage: python benchmarks/pytorch_train_step.py [size] [batch] [steps] [threads] [device]

`data_loader(root, size, batch)` gives the data-loading variant that
`benchmarks/peer_side_by_side.py` times against `proxima perf`'s `train-data/…` workload:
torchvision ImageFolder decoded from disk each time, RandomResizedCrop(size, scale 0.6–1) +
horizontal flip + ImageNet normalisation, pytorch-metric-learning's MPerClassSampler (m = 4),
DataLoader with 2 worker processes.

ResNet-18 trunk (torchvision) + linear 512→128 embedding, triplet margin loss (margin 0.1, all
triplets, avg-non-zero — what pytorch-metric-learning's TripletMarginLoss computes), SGD with
momentum; M-per-class labels (4 per class). Prints images/s of full training steps.
"""
import sys
import time

import torch
import torchvision


def triplet_loss(emb, labels, margin=0.1):
    e = torch.nn.functional.normalize(emb, dim=1)
    d = torch.cdist(e, e)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    pos = same & ~eye
    neg = ~same
    trip = pos[:, :, None] & neg[:, None, :]
    v = (d[:, :, None] - d[:, None, :] + margin).relu()
    v = v[trip]
    nz = v > 0
    return v[nz].mean() if nz.any() else (emb * 0).sum()


def data_loader(root, size, batch, workers=2):
    """An endless iterator of (images, labels) batches from the class folders under `root`."""
    import torchvision.transforms as T
    from pytorch_metric_learning.samplers import MPerClassSampler

    tf = T.Compose([
        T.RandomResizedCrop(size, scale=(0.6, 1.0)),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    ds = torchvision.datasets.ImageFolder(root, transform=tf)
    sampler = MPerClassSampler(ds.targets, m=4, batch_size=batch, length_before_new_iter=len(ds))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, persistent_workers=True, drop_last=True)

    def endless():
        while True:
            yield from loader

    return endless()


def main():
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    device = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    torch.set_num_threads(threads)
    trunk = torchvision.models.resnet18()
    trunk.fc = torch.nn.Identity()
    model = torch.nn.Sequential(trunk, torch.nn.Linear(512, 128)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device)
    labels = (torch.arange(batch, device=device) // 4)
    for i in range(steps + 2):
        if i == 2:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
        opt.zero_grad()
        loss = triplet_loss(model(x), labels)
        loss.backward()
        opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print({"size": size, "batch": batch, "steps": steps, "threads": threads, "device": device, "images_per_sec": round(steps * batch / seconds, 2)})


if __name__ == "__main__":
    main()
