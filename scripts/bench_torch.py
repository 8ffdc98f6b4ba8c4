#!/usr/bin/env python3
"""PyTorch side of `scripts/bench-compare`: the same models and train step as `robustness bench`.

Models (input normalisation (x - 0.5) / 0.25 per channel as the first layer, as ours in bench):
  mlp       flatten -> Linear(C*H*W, 512) -> ReLU -> Linear(512, 512) -> ReLU -> Linear(512, k)
  cnn       3 x [Conv3x3(pad 1, bias) -> BatchNorm -> ReLU -> MaxPool2] (32, 64, 128)
            -> flatten -> Linear(128*H/8*W/8, 256) -> ReLU -> Linear(256, k)
  resnet18  the CIFAR ResNet-18 of MadryLab's robustness (cifar_models/resnet.py)
  resnet18-imagenet, resnet50-imagenet
            torchvision's ImageNet ResNets (7x7 stride-2 stem + max-pool), as
            scripts/interop/robustness_models.py defines them (MadryLab's imagenet_models layout)

Train step (timed per step with time.perf_counter after warm-up):
  x = torch.from_numpy(host_buf.copy()); y = torch.from_numpy(host_labels.copy())
  loss = F.cross_entropy(model(x), y); opt.zero_grad(set_to_none=True); loss.backward();
  opt.step(); loss.item()
The copy of a preallocated host buffer inside the timed region mirrors ours, which clones its
host buffer and uploads it as a tensor every step.

--attack times one L2 PGD step instead (model in eval mode): MadryLab's
robustness.attack_steps.L2Step(orig_input=x0, eps=0.5, step_size=0.1) step() + project() after
the gradient of the mean cross-entropy, as in its attacker loop; if robustness cannot be
imported, a bare PyTorch step with the same formulas ("implementation": "bare").
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN, STD = 0.5, 0.25
RESNET18_CIFAR10_PARAMS = 11_173_962


class Normalize(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.register_buffer("mean", torch.full((1, channels, 1, 1), MEAN))
        self.register_buffer("std", torch.full((1, channels, 1, 1), STD))

    def forward(self, x):
        return (x - self.mean) / self.std


def mlp(c, h, w, k):
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, k),
    )


def cnn(c, h, w, k):
    layers = []
    widths = [c, 32, 64, 128]
    for cin, cout in zip(widths, widths[1:]):
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=True), nn.BatchNorm2d(cout),
                   nn.ReLU(), nn.MaxPool2d(2)]
    flat = 128 * max(h // 8, 1) * max(w // 8, 1)
    layers += [nn.Flatten(), nn.Linear(flat, 256), nn.ReLU(), nn.Linear(256, k)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """MadryLab robustness cifar_models/resnet.py BasicBlock (expansion 1)."""

    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, c, k):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(c, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, 2, 1)
        self.layer2 = self._make_layer(128, 2, 2)
        self.layer3 = self._make_layer(256, 2, 2)
        self.layer4 = self._make_layer(512, 2, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512 * BasicBlock.expansion, k)

    def _make_layer(self, planes, blocks, stride):
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes * BasicBlock.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(self.pool(out), 1))


IMAGENET_ARCHS = ["resnet18-imagenet", "resnet50-imagenet"]


def build(arch, c, h, w, k):
    if arch == "mlp":
        body = mlp(c, h, w, k)
    elif arch == "cnn":
        body = cnn(c, h, w, k)
    elif arch == "resnet18":
        body = ResNet18(c, k)
    elif arch in IMAGENET_ARCHS:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "interop"))
        import robustness_models as rm

        body = rm.build(arch, c, h, w, k)
    else:
        sys.exit(f"bench_torch.py: unknown --arch {arch!r} (mlp, cnn, resnet18, "
                 f"{', '.join(IMAGENET_ARCHS)})")
    model = nn.Sequential(Normalize(c), body)
    params = sum(p.numel() for p in model.parameters())
    if arch == "resnet18" and (c, k) == (3, 10):
        assert params == RESNET18_CIFAR10_PARAMS, f"resnet18 has {params} parameters"
    return model, params


def forward_flops(arch, c, h, w, k):
    """Same formula as ours (crates/robustness/src/bench.rs): 2 per multiply-add of the conv and
    linear layers only."""
    def conv(cin, cout, kk, oh, ow):
        return 2.0 * cin * cout * kk * kk * oh * ow

    def linear(i, o):
        return 2.0 * i * o

    if arch == "mlp":
        return linear(c * h * w, 512) + linear(512, 512) + linear(512, k)
    if arch == "cnn":
        f, hh, ww, cin = 0.0, h, w, c
        for cout in (32, 64, 128):
            f += conv(cin, cout, 3, hh, ww)
            hh, ww, cin = hh // 2, ww // 2, cout
        return f + linear(128 * max(hh, 1) * max(ww, 1), 256) + linear(256, k)
    # resnet18 (CIFAR) and the ImageNet ResNets
    bottleneck = arch == "resnet50-imagenet"
    counts = [3, 4, 6, 3] if bottleneck else [2, 2, 2, 2]
    if arch in IMAGENET_ARCHS:  # 7x7 stride-2 stem, then a stride-2 max-pool
        oh, ow = -(-h // 2), -(-w // 2)
        f, hh, ww, cin = conv(c, 64, 7, oh, ow), -(-oh // 2), -(-ow // 2), 64
    else:
        f, hh, ww, cin = conv(c, 64, 3, h, w), h, w, 64
    for stage in range(4):
        planes = 64 << stage
        for i in range(counts[stage]):
            stride = 2 if stage > 0 and i == 0 else 1
            oh, ow = -(-hh // stride), -(-ww // stride)
            cout = planes * 4 if bottleneck else planes
            if bottleneck:
                f += (conv(cin, planes, 1, hh, ww) + conv(planes, planes, 3, oh, ow)
                      + conv(planes, cout, 1, oh, ow))
            else:
                f += conv(cin, planes, 3, oh, ow) + conv(planes, planes, 3, oh, ow)
            if stride != 1 or cin != cout:
                f += conv(cin, cout, 1, oh, ow)
            hh, ww, cin = oh, ow, cout
    return f + linear(cin, k)


def summary(samples):
    return {
        "median_ms": statistics.median(samples),
        "min_ms": min(samples),
        "max_ms": max(samples),
        "samples_ms": samples,
    }


def bench_train(model, images, labels, warmup, iters):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()
    samples = []
    for i in range(warmup + iters):
        start = time.perf_counter()
        x = torch.from_numpy(images.copy())
        y = torch.from_numpy(labels.copy())
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
        if i >= warmup:
            samples.append((time.perf_counter() - start) * 1e3)
    return summary(samples)


class BareL2Step:
    """The formulas of MadryLab's robustness.attack_steps.L2Step."""

    def __init__(self, orig_input, eps, step_size):
        self.orig_input, self.eps, self.step_size = orig_input, eps, step_size

    def project(self, x):
        diff = (x - self.orig_input).renorm(p=2, dim=0, maxnorm=self.eps)
        return torch.clamp(self.orig_input + diff, 0, 1)

    def step(self, x, g):
        l = len(x.shape) - 1
        g_norm = torch.norm(g.reshape(g.shape[0], -1), dim=1).view(-1, *([1] * l))
        return x + g / (g_norm + 1e-10) * self.step_size


def l2_step_class():
    try:
        import robustness.attacker  # noqa: F401  (the brief: the attacker module must import)
        from robustness.attack_steps import L2Step
        import robustness
        return L2Step, f"madrylab robustness {getattr(robustness, '__version__', '?')}", None
    except Exception as e:  # noqa: BLE001 - any import failure means the fallback
        return BareL2Step, "bare", f"{type(e).__name__}: {e}"


def bench_attack(model, images, labels, warmup, iters):
    step_cls, implementation, import_error = l2_step_class()
    model.eval()
    x0 = torch.from_numpy(images.copy())
    y = torch.from_numpy(labels.copy())
    step = step_cls(orig_input=x0, eps=0.5, step_size=0.1)
    x = x0.clone()
    samples = []
    for i in range(warmup + iters):
        start = time.perf_counter()
        x = x.clone().detach().requires_grad_(True)
        losses = F.cross_entropy(model(x), y, reduction="none")
        (grad,) = torch.autograd.grad(losses.mean(), [x])
        with torch.no_grad():
            x = step.project(step.step(x, grad))
        if i >= warmup:
            samples.append((time.perf_counter() - start) * 1e3)
    out = summary(samples)
    out["implementation"] = implementation
    if import_error:
        out["import_error"] = import_error
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="cnn", choices=["mlp", "cnn", "resnet18"] + IMAGENET_ARCHS)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--shape", default="3x32x32")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attack", action="store_true", help="time one L2 PGD step instead")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    c, h, w = (int(s) for s in a.shape.split("x"))
    if min(a.batch, a.iters, c, h, w) <= 0 or a.warmup < 0 or a.classes < 2:
        sys.exit("bench_torch.py: --batch, --iters and the shape must be positive")

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    images = rng.random((a.batch, c, h, w), dtype=np.float32)  # uniform [0, 1)
    labels = rng.integers(0, a.classes, size=a.batch, dtype=np.int64)
    model, params = build(a.arch, c, h, w, a.classes)

    fwd = forward_flops(a.arch, c, h, w, a.classes)
    if a.attack:
        t = bench_attack(model, images, labels, a.warmup, a.iters)
        flops = 2.0 * fwd * a.batch  # forward + gradient w.r.t. the input (about one forward)
        result = {"pgd_step_ms": t.pop("median_ms")}
    else:
        t = bench_train(model, images, labels, a.warmup, a.iters)
        flops = 3.0 * fwd * a.batch
        result = {"train_step_ms": t.pop("median_ms")}
    median = next(iter(result.values()))
    result.update(t)
    result.update({
        "arch": a.arch,
        "batch": a.batch,
        "shape": [c, h, w],
        "gflops": flops / (median * 1e-3) / 1e9,
        "flops_per_step": flops,
        "threads": torch.get_num_threads(),
        "parameters": params,
        "torch_version": torch.__version__,
        "input": "torch.from_numpy(copy of a preallocated numpy buffer) each step",
    })
    if a.json:
        print(json.dumps(result))
    else:
        what = "PGD L2 step" if a.attack else "train step"
        print(f"torch {a.arch} batch {a.batch} ({a.shape}): {what} median {median:.1f} ms "
              f"(min {t['min_ms']:.1f}, max {t['max_ms']:.1f}, {a.iters} steps after "
              f"{a.warmup} warm-up), {result['gflops']:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
