#!/usr/bin/env python3
"""PyTorch side of `scripts/bench-gpu`: the same GPU workloads as ours, on CUDA.

  bench      train step and L2 PGD step of cnn / resnet18 (models and step formulas of
             scripts/bench_torch.py), timed with torch.cuda.synchronize() after each step
  train      ResNet-18 on CIFAR-10 (the binary batch files): SGD lr 0.1, momentum 0.9,
             weight decay 5e-4, batch 128, random crop (pad 4) + horizontal flip, CIFAR mean/std
             normalisation as the first layer; wall-clock seconds of each epoch and the test
             accuracy after the last; saves the weights for `construct`
  construct  D_det construction time: targeted L2 PGD toward (y + 1) mod 10 (eps 0.5, step 0.1,
             100 steps, normalised gradient steps, projection, clamp to [0, 1], best iterate
             kept), batch 250, on N training images spread evenly over the training set

--precision: fp32 (TF32 off: what our Vulkan path computes), tf32 (PyTorch's default for
convolutions on this GPU), bf16 (torch.autocast to bfloat16). One JSON object per line on stdout.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_torch  # noqa: E402  (models, FLOP formula, MadryLab-compatible L2 step)

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def set_precision(p):
    tf32 = p == "tf32"
    torch.backends.cudnn.allow_tf32 = tf32 or p == "bf16"
    torch.backends.cuda.matmul.allow_tf32 = tf32 or p == "bf16"
    torch.backends.cudnn.benchmark = True


def autocast(p):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=p == "bf16")


# GPU_TORCH_DEVICE=cpu runs the script's logic on the CPU (a local check of the script only).
DEVICE = os.environ.get("GPU_TORCH_DEVICE", "cuda")


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def bench(a):
    for precision in a.precision.split(","):
        set_precision(precision)
        a.one_precision = precision
        bench_one(a)


def bench_one(a):
    dev = torch.device(DEVICE)
    rows = []
    for arch in a.archs.split(","):
        for batch in (int(b) for b in a.batches.split(",")):
            for workload in ("train", "pgd"):
                torch.manual_seed(0)
                model, _ = bench_torch.build(arch, 3, 32, 32, 10)
                model = model.to(dev)
                rng = np.random.default_rng(0)
                x0 = torch.from_numpy(rng.random((batch, 3, 32, 32), dtype=np.float32)).to(dev)
                y = torch.from_numpy(rng.integers(0, 10, size=batch)).to(dev)
                samples = []
                if workload == "train":
                    model.train()
                    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                                          weight_decay=5e-4)
                    for i in range(a.warmup + a.iters):
                        sync()
                        t = time.perf_counter()
                        with autocast(a.one_precision):
                            loss = F.cross_entropy(model(x0), y)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        loss.item()
                        if i >= a.warmup:
                            samples.append((time.perf_counter() - t) * 1e3)
                else:
                    model.eval()
                    step = bench_torch.BareL2Step(orig_input=x0, eps=0.5, step_size=0.1)
                    x = x0.clone()
                    for i in range(a.warmup + a.iters):
                        sync()
                        t = time.perf_counter()
                        x = x.clone().detach().requires_grad_(True)
                        with autocast(a.one_precision):
                            losses = F.cross_entropy(model(x), y, reduction="none")
                        (g,) = torch.autograd.grad(losses.mean(), [x])
                        with torch.no_grad():
                            x = step.project(step.step(x, g))
                        sync()
                        if i >= a.warmup:
                            samples.append((time.perf_counter() - t) * 1e3)
                rows.append({
                    "side": "pytorch", "what": "bench", "workload": workload, "arch": arch,
                    "batch": batch, "precision": a.one_precision,
                    "median_ms": statistics.median(samples), "min_ms": min(samples),
                    "max_ms": max(samples), "iters": a.iters,
                })
                print(json.dumps(rows[-1]), flush=True)


def read_cifar(dirname):
    def read(name):
        path = os.path.join(dirname, name)
        if not os.path.isfile(path):
            sys.exit(f"gpu_torch.py: {path} not found (expected the CIFAR-10 binary batch files)")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % 3073:
            sys.exit(f"gpu_torch.py: {path} has {raw.size} bytes, not a multiple of 3,073")
        raw = raw.reshape(-1, 3073)
        return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)

    parts = [read(f"data_batch_{i}.bin") for i in range(1, 6)]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = read("test_batch.bin")
    return xtr, ytr, xte, yte


def resnet18(dev):
    body = bench_torch.ResNet18(3, 10)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)
            self.body = body

        def forward(self, x):
            return self.body((x - self.mean) / self.std)

    return Net().to(dev)


def augment(x, gen):
    """Random crop with zero padding 4 and horizontal flip, on the GPU."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), device=x.device, generator=gen)
    dy = torch.randint(0, 9, (n,), device=x.device, generator=gen)
    ar = torch.arange(32, device=x.device)
    rows = (dy[:, None] + ar[None, :])[:, None, :, None].expand(n, 3, 32, 40)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + ar[None, :])[:, None, None, :].expand(n, 3, 32, 32)
    out = out.gather(3, cols)
    flip = torch.rand(n, device=x.device, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def evaluate(model, x, y, precision):
    model.eval()
    correct = 0
    with torch.no_grad(), autocast(precision):
        for i in range(0, x.shape[0], 1000):
            correct += (model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item()
    return correct / x.shape[0]


def train(a):
    dev = torch.device(DEVICE)
    torch.manual_seed(a.seed)
    xtr, ytr, xte, yte = read_cifar(a.data)
    xtr = torch.from_numpy(xtr).to(dev).float().div_(255)
    ytr = torch.from_numpy(ytr).to(dev)
    xte = torch.from_numpy(xte).to(dev).float().div_(255)
    yte = torch.from_numpy(yte).to(dev)
    model = resnet18(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator(device=dev)
    gen.manual_seed(a.seed)
    n = xtr.shape[0]
    epochs = []
    for epoch in range(a.epochs):
        model.train()
        sync()
        t = time.perf_counter()
        perm = torch.randperm(n, device=dev, generator=gen)
        for i in range(0, n, 128):
            idx = perm[i:i + 128]
            xb = augment(xtr[idx], gen)
            with autocast(a.precision):
                loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()
        seconds = time.perf_counter() - t
        acc = evaluate(model, xte, yte, a.precision)
        epochs.append({"epoch": epoch + 1, "seconds": seconds, "test_accuracy": acc})
        print(json.dumps({"side": "pytorch", "what": "epoch", "precision": a.precision,
                          **epochs[-1]}), flush=True)
    if a.save:
        torch.save(model.state_dict(), a.save)
    print(json.dumps({
        "side": "pytorch", "what": "train", "arch": "resnet18", "precision": a.precision,
        "images": n, "epochs": a.epochs,
        "median_epoch_seconds": statistics.median(e["seconds"] for e in epochs),
        "test_accuracy": epochs[-1]["test_accuracy"],
    }), flush=True)


def construct(a):
    dev = torch.device(DEVICE)
    xtr, ytr, _, _ = read_cifar(a.data)
    idx = (np.arange(a.limit) * (xtr.shape[0] // a.limit))
    x_all = torch.from_numpy(xtr[idx]).to(dev).float().div_(255)
    t_all = (torch.from_numpy(ytr[idx]).to(dev) + 1) % 10
    model = resnet18(dev)
    if a.model:
        model.load_state_dict(torch.load(a.model, map_location=dev))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    sync()
    start = time.perf_counter()
    success = 0
    for i in range(0, a.limit, a.batch):
        x0, t = x_all[i:i + a.batch], t_all[i:i + a.batch]
        step = bench_torch.BareL2Step(orig_input=x0, eps=0.5, step_size=0.1)
        x = x0.clone()
        best = x0.clone()
        best_loss = torch.full((x0.shape[0],), float("inf"), device=dev)
        for _ in range(a.steps):
            x = x.clone().detach().requires_grad_(True)
            with autocast(a.precision):
                losses = F.cross_entropy(model(x), t, reduction="none").float()
            (g,) = torch.autograd.grad(losses.sum(), [x])
            with torch.no_grad():
                better = losses < best_loss
                best = torch.where(better[:, None, None, None], x, best)
                best_loss = torch.where(better, losses, best_loss)
                # targeted: descend the loss of the target class
                x = step.project(step.step(x, -g))
        with torch.no_grad(), autocast(a.precision):
            losses = F.cross_entropy(model(x), t, reduction="none").float()
            better = losses < best_loss
            best = torch.where(better[:, None, None, None], x, best)
            success += (model(best).argmax(1) == t).sum().item()
    sync()
    seconds = time.perf_counter() - start
    print(json.dumps({
        "side": "pytorch", "what": "construct_det", "precision": a.precision,
        "images": a.limit, "steps": a.steps, "batch": a.batch, "seconds": seconds,
        "images_per_second": a.limit / seconds,
        "extrapolated_50000_seconds": seconds * 50000 / a.limit,
        "attack_success": success / a.limit,
    }), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--archs", default="cnn,resnet18")
    b.add_argument("--batches", default="32,128")
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--iters", type=int, default=20)
    t = sub.add_parser("train")
    t.add_argument("--data", required=True)
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--save")
    c = sub.add_parser("construct")
    c.add_argument("--data", required=True)
    c.add_argument("--model")
    c.add_argument("--limit", type=int, default=1000)
    c.add_argument("--steps", type=int, default=100)
    c.add_argument("--batch", type=int, default=250)
    b.add_argument("--precision", default="fp32",
                   help="fp32, tf32, bf16 or a comma-separated list of them")
    for s in (t, c):
        s.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default="fp32")
    a = p.parse_args()
    if DEVICE == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_torch.py: PyTorch sees no CUDA GPU")
    for p in a.precision.split(","):
        if p not in ("fp32", "tf32", "bf16"):
            sys.exit(f"gpu_torch.py: unknown precision {p!r} (fp32, tf32, bf16)")
    set_precision(a.precision.split(",")[0])
    print(json.dumps({"side": "pytorch", "what": "device", "gpu": torch.cuda.get_device_name(0) if DEVICE == "cuda" else DEVICE,
                      "torch": torch.__version__, "cmd": a.cmd}), flush=True)
    {"bench": bench, "train": train, "construct": construct}[a.cmd](a)


if __name__ == "__main__":
    main()
