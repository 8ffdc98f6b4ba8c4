#!/usr/bin/env python3
"""Writes crates/robustness/tests/fixtures/interop/: PyTorch-made files for the interop tests
(crates/robustness/tests/interop.rs). Not run by CI; run `scripts/interop/make-fixtures`.

- madry_cnn.pt: a checkpoint in the reference library's layout (MadryLab `robustness` 1.2.1.post2:
  DataParallel(AttackerModel(net, CIFAR-like dataset)), saved like its train.py: model,
  optimizer, schedule, epoch, with dill, in the legacy (pre-1.6) container its released
  checkpoints use), for our cnn on 3x8x8 inputs with 10 classes, random weights and random
  batch-norm statistics.
- torch_mlp.pt: a plain state dict (ZIP container) of our mlp on 1x8x8 inputs, 10 classes.
- logits.json: inputs, and each model's logits from PyTorch on them.
- released_legacy/ddet_CIFAR, released_zip/drand_CIFAR: CIFAR_ims / CIFAR_lab as the authors
  released them (lists of tensors), in both containers; released.json: their values.
- layouts.json: state-dict keys and shapes of scripts/interop/robustness_models.py for every
  architecture (3x8x8, 4 classes), of MadryLab's ResNet-18 / ResNet-50 / VGG-11 wrapped in
  its AttackerModel (3x32x32, 10 classes), and of its ImageNet ResNet-18 / ResNet-50
  (`imagenet_models`, 1000 classes) as `resnet18-imagenet` / `resnet50-imagenet`.
"""
import json
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dill  # noqa: E402
from madry_compat import AttackerModel, cifar_models, imagenet_models  # noqa: E402
import robustness_models as rm  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates", "robustness", "tests", "fixtures", "interop")
CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class Data:
    """What AttackerModel needs from a dataset: the normalisation statistics."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean)
        self.std = torch.tensor(std)


def randomise(model, gen):
    """Random weights and batch-norm statistics (so a swapped mean/var would show)."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(3)
            elif name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif name.endswith("running_mean"):
                t.copy_(0.2 * torch.randn(t.shape, generator=gen))
            else:
                fan_in = t[0].numel() if t.dim() > 1 else 1
                t.copy_(torch.randn(t.shape, generator=gen) / fan_in ** 0.5)


def layout(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    results = {}

    # 1. The reference library's checkpoint layout.
    net = rm.build("cnn", 3, 8, 8, 10)
    randomise(net, gen)
    attacker = nn.DataParallel(AttackerModel(net, Data(CIFAR_MEAN, CIFAR_STD))).eval()
    opt = torch.optim.SGD(attacker.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(8, 3, 8, 8, generator=gen)
    y = torch.randint(0, 10, (8,), generator=gen)
    # One small step: momentum buffers in the optimizer state, as in a real checkpoint.
    # AttackerModel returns (logits, input) by default.
    nn.functional.cross_entropy(attacker(x)[0], y).backward()
    opt.step()
    opt.zero_grad()
    sd_info = {"model": attacker.state_dict(), "optimizer": opt.state_dict(),
               "schedule": None, "epoch": 7, "amp": None, "nat_prec1": 12.5}
    torch.save(sd_info, os.path.join(OUT, "madry_cnn.pt"), pickle_module=dill,
               _use_new_zipfile_serialization=False)
    with torch.no_grad():
        out = attacker(x)[0]
    assert out.abs().max() < 100, "logits should be of ordinary size"
    results["madry_cnn"] = {"arch": "cnn", "shape": [3, 8, 8], "classes": 10,
                            "inputs": x.flatten().tolist(), "logits": out.flatten().tolist()}

    # 2. A plain state dict of our mlp (no normaliser in the file: mean/std given separately).
    net = rm.build("mlp", 1, 8, 8, 10)
    randomise(net, gen)
    torch.save(net.state_dict(), os.path.join(OUT, "torch_mlp.pt"))
    mean, std = [0.3], [0.25]
    x = torch.rand(5, 1, 8, 8, generator=gen)
    with torch.no_grad():
        out = rm.Wrapped(rm.InputNormalize(mean, std), net).eval()(x)
    results["torch_mlp"] = {"arch": "mlp", "shape": [1, 8, 8], "classes": 10, "mean": mean,
                            "std": std, "inputs": x.flatten().tolist(),
                            "logits": out.flatten().tolist()}
    with open(os.path.join(OUT, "logits.json"), "w") as f:
        json.dump(results, f)

    # 3. Released data-set layout, both containers; pixel values k/255.
    pixels = torch.randint(0, 256, (7, 3, 32, 32), generator=gen)
    ims = pixels.float() / 255.0
    labs = torch.randint(0, 10, (7,), generator=gen)
    for folder, zipped in [("released_legacy/ddet_CIFAR", False), ("released_zip/drand_CIFAR", True)]:
        d = os.path.join(OUT, folder)
        os.makedirs(d, exist_ok=True)
        torch.save([ims[:4], ims[4:]], os.path.join(d, "CIFAR_ims"),
                   _use_new_zipfile_serialization=zipped)
        torch.save([labs[:4], labs[4:]], os.path.join(d, "CIFAR_lab"),
                   _use_new_zipfile_serialization=zipped)
    with open(os.path.join(OUT, "released.json"), "w") as f:
        json.dump({"pixels": pixels.flatten().tolist(), "labels": labs.tolist()}, f)

    # 4. Layouts.
    layouts = {"ours": {}, "madry": {}}
    for arch in ["linear", "mlp", "cnn", "resnet18", "resnet50", "vgg11", "resnet18-imagenet",
                 "resnet50-imagenet"]:
        layouts["ours"][arch] = layout(rm.Wrapped(rm.InputNormalize([0.0] * 3, [1.0] * 3),
                                                  rm.build(arch, 3, 8, 8, 4)))
    for arch in ["resnet18", "resnet50", "vgg11"]:
        net = getattr(cifar_models, arch)(num_classes=10)
        layouts["madry"][arch] = layout(nn.DataParallel(AttackerModel(net, Data(CIFAR_MEAN, CIFAR_STD))))
    for arch in ["resnet18", "resnet50"]:
        net = getattr(imagenet_models, arch)(num_classes=1000)
        layouts["madry"][f"{arch}-imagenet"] = layout(
            nn.DataParallel(AttackerModel(net, Data(IMAGENET_MEAN, IMAGENET_STD))))
    with open(os.path.join(OUT, "layouts.json"), "w") as f:
        json.dump(layouts, f, indent=0, sort_keys=True)

    for name in sorted(os.listdir(OUT)):
        p = os.path.join(OUT, name)
        if os.path.isfile(p):
            print(f"{name}: {os.path.getsize(p):,} bytes")


if __name__ == "__main__":
    main()
