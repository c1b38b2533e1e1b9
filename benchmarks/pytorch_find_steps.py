"""The find recipe's two training steps written in PyTorch, for the side-by-side with `proxima perf`.

Usage: python benchmarks/pytorch_find_steps.py {localiser|embed|localiser-bf16|embed-bf16} [samples] [threads] [channels_last]
Prints one JSON line: {"workload", "median_s"} (median of `samples` steps after one warm-up).
With `channels_last` the models are moved to that memory format (`model.to(memory_format=...)`),
the layout proxima's EfficientNet-Lite uses; without it, PyTorch's default (NCHW) as a user writes it.
The `-bf16` steps run the forward under `torch.autocast("cpu", dtype=torch.bfloat16)` and the loss
in float32, as `proxima perf`'s `-bf16` variants do.

- localiser (`train/localiser-finetune/size=384,batch=16,from=5`): EfficientNet-Lite0 (TF 'SAME'
  padding, ReLU6, BatchNorm eps 1e-3, no squeeze-excitation), the stem and blocks 0-4 frozen under
  no_grad, blocks 5-15 trained, every BatchNorm with its running statistics; the CenterNet head of
  crates/detect/src/localiser.rs (1x1 laterals, nearest upsampling, GroupNorm, 3x3 mixing, 5 output
  channels); focal loss on the heat map + L1 on sizes and offsets at the peaks; Adam (head 2e-3,
  trunk 2e-4), gradient clipping at 10; batch 16 at 384 px, two boxes per image.
- embed (`train/embed-efficientnet_lite0/size=128,batch=32`): EfficientNet-Lite0 (BatchNorm in
  training mode, drop connect 0.2) + linear 1280->128, L2-normalised; pytorch-metric-learning's
  MultiSimilarityMiner and MultiSimilarityLoss (defaults); AdamW (trunk 3e-4, head 1e-3, weight
  decay 1e-4), clipping at 10; batch 32 at 128 px, labels i // 4.
"""
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
TAPS = (4, 10, 15)


class SameConv(nn.Conv2d):
    """TF 'SAME' padding: the odd pixel of a strided convolution goes bottom/right."""

    def __init__(self, cin, cout, k, stride=1, groups=1):
        super().__init__(cin, cout, k, stride, padding=(k - 1) // 2 if stride == 1 else 0, groups=groups, bias=False)
        self.k, self.s = k, stride

    def forward(self, x):
        if self.s > 1:
            h, w = x.shape[-2:]
            ph = max((math.ceil(h / self.s) - 1) * self.s + self.k - h, 0)
            pw = max((math.ceil(w / self.s) - 1) * self.s + self.k - w, 0)
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return super().forward(x)


class MBConv(nn.Module):
    def __init__(self, cin, cout, k, stride, expand, drop):
        super().__init__()
        mid = cin * expand
        self.expand = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid, 1e-3, 0.01), nn.ReLU6()) if expand != 1 else nn.Identity()
        self.dw = nn.Sequential(SameConv(mid, mid, k, stride, groups=mid), nn.BatchNorm2d(mid, 1e-3, 0.01), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout, 1e-3, 0.01))
        self.skip, self.drop = stride == 1 and cin == cout, drop

    def forward(self, x):
        y = self.project(self.dw(self.expand(x)))
        if not self.skip:
            return y
        if self.training and self.drop > 0:
            keep = 1 - self.drop
            y = y / keep * torch.floor(torch.rand(y.shape[0], 1, 1, 1) + keep)
        return y + x


class Lite0(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(SameConv(3, 32, 3, 2), nn.BatchNorm2d(32, 1e-3, 0.01), nn.ReLU6())
        blocks, cin, total = [], 32, sum(s[0] for s in STAGES)
        for rep, k, s, e, cout in STAGES:
            for r in range(rep):
                blocks.append(MBConv(cin, cout, k, s if r == 0 else 1, e, 0.2 * len(blocks) / total))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280, 1e-3, 0.01), nn.ReLU6())

    def features(self, x):
        y = self.stem(x)
        for b in self.blocks:
            y = b(y)
        return self.head(y).mean((2, 3))

    def maps_tuned(self, x, first):
        taps = []
        with torch.no_grad():
            y = self.stem(x)
            for i, b in enumerate(self.blocks[:first]):
                y = b(y)
                if i in TAPS:
                    taps.append(y)
        for i, b in enumerate(self.blocks):
            if i < first:
                continue
            y = b(y)
            if i in TAPS:
                taps.append(y)
        return taps


def groups(w):
    return next(g for g in range(8, 0, -1) if w % g == 0)


class Head(nn.Module):
    def __init__(self, w16=64, w8=48):
        super().__init__()
        self.lat32, self.lat16 = nn.Conv2d(320, w16, 1), nn.Conv2d(112, w16, 1)
        self.gn16a, self.mix16, self.gn16b = nn.GroupNorm(groups(w16), w16), nn.Conv2d(w16, w16, 3, padding=1), nn.GroupNorm(groups(w16), w16)
        self.from16, self.lat8 = nn.Conv2d(w16, w8, 1), nn.Conv2d(40, w8, 1)
        self.gn8a, self.mix8, self.gn8b = nn.GroupNorm(groups(w8), w8), nn.Conv2d(w8, w8, 3, padding=1), nn.GroupNorm(groups(w8), w8)
        self.out = nn.Conv2d(w8, 5, 1)

    def forward(self, f8, f16, f32):
        up32 = F.interpolate(self.lat32(f32), size=f16.shape[-2:], mode="nearest")
        p16 = F.relu(self.gn16b(self.mix16(F.relu(self.gn16a(self.lat16(f16) + up32)))))
        up16 = F.interpolate(self.from16(p16), size=f8.shape[-2:], mode="nearest")
        p8 = F.relu(self.gn8b(self.mix8(F.relu(self.gn8a(self.lat8(f8) + up16)))))
        return self.out(p8)


def targets(boxes, grid, stride=8):
    """Heat map, peak indices, regression targets and mask, as crates/detect/src/train.rs builds them."""
    n, m = len(boxes), max(1, max(len(b) for b in boxes))
    heat = torch.zeros(n, 1, grid, grid)
    ind, reg, mask = torch.zeros(n, 1, m, dtype=torch.long), torch.zeros(n, 4, m), torch.zeros(n, 1, m)
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    for i, bs in enumerate(boxes):
        for j, (x0, y0, x1, y1) in enumerate(bs):
            cx, cy, bw, bh = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride, (x1 - x0) / stride, (y1 - y0) / stride
            ix, iy = min(max(int(cx), 0), grid - 1), min(max(int(cy), 0), grid - 1)
            sx, sy = max(0.54 * bw / 6 * 2, 0.5), max(0.54 * bh / 6 * 2, 0.5)
            g = torch.exp(-((xs - ix) ** 2) / (2 * sx * sx) - ((ys - iy) ** 2) / (2 * sy * sy))
            heat[i, 0] = torch.maximum(heat[i, 0], g)
            heat[i, 0, iy, ix] = 1
            ind[i, 0, j] = iy * grid + ix
            reg[i, :, j] = torch.tensor([math.log(max(bw, 1e-3)), math.log(max(bh, 1e-3)), cx - ix, cy - iy])
            mask[i, 0, j] = 1
    return heat, ind, reg, mask, sum(len(b) for b in boxes)


def centernet_loss(out, t):
    heat, ind, reg, mask, num = t
    logit = out[:, :1]
    pos = (heat == 1).float()
    p = logit.sigmoid()
    pos_loss = (F.logsigmoid(logit) * (1 - p) ** 2 * pos).sum()
    neg_loss = (F.logsigmoid(-logit) * p ** 2 * (1 - heat) ** 4 * (1 - pos)).sum()
    norm = max(num, 1)
    n, _, g, _ = out.shape
    pred = out[:, 1:].reshape(n, 4, g * g).gather(2, ind.expand(n, 4, ind.shape[2]))
    return -(pos_loss + neg_loss) / norm + ((pred - reg).abs() * mask).sum() / norm


def median_steps(step, samples):
    step()
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def localiser_step(channels_last=False, bf16=False):
    """The localiser's fine-tuning step as a zero-argument callable."""
    torch.manual_seed(0)
    trunk, head = Lite0().eval(), Head()
    if channels_last:
        trunk, head = trunk.to(memory_format=torch.channels_last), head.to(memory_format=torch.channels_last)
    first = 5
    for i, b in enumerate(trunk.blocks):
        b.requires_grad_(i >= first)
    trunk.stem.requires_grad_(False)
    trunk.head.requires_grad_(False)
    params_trunk = [p for p in trunk.parameters() if p.requires_grad]
    opt = torch.optim.Adam([{"params": head.parameters(), "lr": 2e-3}, {"params": params_trunk, "lr": 2e-4}])
    s = 384
    x = torch.randn(16, 3, s, s)
    boxes = [[(o + 0.05 * s, o + 0.1 * s, o + 0.25 * s, o + 0.2 * s), (0.6 * s, 0.55 * s, 0.9 * s, 0.7 * s)] for o in ((i % 5) * 0.1 * s for i in range(16))]

    def step():
        t = targets(boxes, s // 8)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            f8, f16, f32 = trunk.maps_tuned(x, first)
            out = head(f8, f16, f32)
        loss = centernet_loss(out.float(), t)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(head.parameters()) + params_trunk, 10.0)
        opt.step()

    return step


def embed_step(channels_last=False, bf16=False):
    """The embedding's training step as a zero-argument callable."""
    from pytorch_metric_learning import losses, miners

    torch.manual_seed(0)
    trunk, lin = Lite0().train(), nn.Linear(1280, 128)
    if channels_last:
        trunk = trunk.to(memory_format=torch.channels_last)
    loss_fn, miner = losses.MultiSimilarityLoss(), miners.MultiSimilarityMiner()
    opt = torch.optim.AdamW([{"params": trunk.parameters(), "lr": 3e-4}, {"params": lin.parameters(), "lr": 1e-3}], weight_decay=1e-4)
    x = torch.randn(32, 3, 128, 128)
    labels = torch.arange(32) // 4

    def step():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            e = lin(trunk.features(x))
        e = F.normalize(e.float(), dim=1)
        loss = loss_fn(e, labels, miner(e, labels))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(trunk.parameters()) + list(lin.parameters()), 10.0)
        opt.step()

    return step


STEPS = {
    "localiser": ("train/localiser-finetune/size=384,batch=16,from=5", localiser_step),
    "embed": ("train/embed-efficientnet_lite0/size=128,batch=32", embed_step),
    "localiser-bf16": ("train/localiser-finetune-bf16/size=384,batch=16,from=5", lambda cl=False: localiser_step(cl, bf16=True)),
    "embed-bf16": ("train/embed-efficientnet_lite0-bf16/size=128,batch=32", lambda cl=False: embed_step(cl, bf16=True)),
}


def main():
    which = sys.argv[1]
    samples = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    channels_last = len(sys.argv) > 4 and sys.argv[4] == "channels_last"
    name, make = STEPS[which]
    print(json.dumps({"workload": name, "channels_last": channels_last, "median_s": median_steps(make(channels_last), samples)}))


if __name__ == "__main__":
    main()
