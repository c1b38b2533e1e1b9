"""Reference for `proxima data bench`: torchvision's DataLoader on the same folder and transforms.

Usage: python benchmarks/torchvision_loader.py <class-folder-tree> [batch_size] [batches] [workers]

Mirrors proxima-data's `PipelineConfig::train(128)` (random resized crop 0.6–1, rotation ±10° p=0.5,
perspective 0.2 p=0.3, colour jitter 0.3/0.3/0.3/0.03 p=0.8, grayscale p=0.05, blur σ 0.1–1 p=0.2,
Gaussian noise σ 0.02 p=0.2, ImageNet normalisation) and times decode + augment + batch.
PyTorch/torchvision are needed only for this comparison; Proxima does not depend on them.
"""
import sys
import time

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms as T


class Noise:
    def __init__(self, std, p):
        self.std, self.p = std, p

    def __call__(self, x):
        if torch.rand(()) < self.p:
            x = (x + torch.randn_like(x) * self.std).clamp(0, 1)
        return x


def main():
    root = sys.argv[1]
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    batches = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    torch.set_num_threads(1)
    tf = T.Compose([
        T.RandomResizedCrop(128, scale=(0.6, 1.0)),
        T.RandomApply([T.RandomRotation(10, fill=128)], p=0.5),
        T.RandomPerspective(0.2, p=0.3, fill=128),
        T.RandomApply([T.ColorJitter(0.3, 0.3, 0.3, 0.03)], p=0.8),
        T.RandomGrayscale(0.05),
        T.RandomApply([T.GaussianBlur(5, sigma=(0.1, 1.0))], p=0.2),
        T.ToTensor(),
        Noise(0.02, 0.2),
        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    ds = datasets.ImageFolder(root, transform=tf)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True, persistent_workers=False)
    it = iter(loader)
    start = time.perf_counter()
    images = 0
    for _ in range(batches):
        try:
            x, _ = next(it)
        except StopIteration:
            it = iter(loader)
            x, _ = next(it)
        images += x.shape[0]
    seconds = time.perf_counter() - start
    print({"images": images, "seconds": round(seconds, 3), "images_per_sec": round(images / seconds, 1), "workers": workers})


if __name__ == "__main__":
    main()
