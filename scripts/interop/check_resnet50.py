#!/usr/bin/env python3
"""Full-size interop check, not run by CI (run scripts/interop/check-resnet50): MadryLab
checkpoints of its CIFAR ResNet-50 / ResNet-18 / VGG-11 (32x32) and of its ImageNet ResNet-50 /
ResNet-18 (`imagenet_models`, 224x224, 1000 classes; random weights and batch-norm statistics,
saved as its train.py does, legacy container) go through `robustness import`, `robustness
predict` and `robustness export`; the logits are compared with PyTorch's on the same images, both
directions.

    check_resnet50.py ROBUSTNESS_BINARY WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dill  # noqa: E402
from madry_compat import AttackerModel, cifar_models, imagenet_models  # noqa: E402
import robustness_models as rm  # noqa: E402

binary, work = sys.argv[1], sys.argv[2]
shutil.rmtree(work, ignore_errors=True)  # a fresh folder each run
os.makedirs(work)
torch.manual_seed(0)
gen = torch.Generator().manual_seed(0)


class Data:
    def __init__(self, mean, std):
        self.mean = torch.tensor(mean)
        self.std = torch.tensor(std)


CIFAR = Data([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])
IMAGENET = Data([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def image_folder(root, side):
    """A one-class folder of side x side PNGs: all `import --dataset folder:` needs is the
    input shape (the class count comes from --num-classes)."""
    from PIL import Image

    for split in ["train", "test"]:
        os.makedirs(os.path.join(root, split, "a"))
        Image.new("RGB", (side, side)).save(os.path.join(root, split, "a", "0.png"))
    return root


def run(*args):
    t = time.time()
    subprocess.run([binary, *args], check=True, stdout=subprocess.DEVNULL)
    return time.time() - t


results = {}
# (our arch, MadryLab's network, normaliser, input side, import's --dataset arguments)
imagenet_layout = ["--dataset", "folder:" + image_folder(os.path.join(work, "layout224"), 224),
                   "--num-classes", "1000"]
cases = [(a, lambda a=a: getattr(cifar_models, a)(num_classes=10), CIFAR, 32,
          ["--dataset", "cifar10"]) for a in ["resnet50", "resnet18", "vgg11"]]
cases += [(f"{a}-imagenet", lambda a=a: getattr(imagenet_models, a)(num_classes=1000), IMAGENET,
           224, imagenet_layout) for a in ["resnet50", "resnet18"]]
for arch, build, data, side, dataset_args in cases:
    net = build()
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("running_mean"):
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
            elif name.endswith("running_var"):
                t.copy_(0.8 + 0.4 * torch.rand(t.shape, generator=gen))
    model = nn.DataParallel(AttackerModel(net, data)).eval()
    ckpt = os.path.join(work, f"madry_{arch}.pt")
    torch.save({"model": model.state_dict(), "optimizer": None, "schedule": None, "epoch": 150},
               ckpt, pickle_module=dill, _use_new_zipfile_serialization=False)
    x = torch.rand(16 if side == 32 else 4, 3, side, side, generator=gen)
    images = os.path.join(work, "images.pt")
    torch.save(x, images)
    with torch.no_grad():
        theirs = model(x)[0]

    ours_dir = os.path.join(work, f"ours_{arch}")
    t_import = run("import", "--from", "madry", "--arch", arch, *dataset_args, ckpt,
                   "--out", ours_dir)
    logits_path = os.path.join(work, f"logits_{arch}.pt")
    run("predict", "--checkpoint", ours_dir, "--images", images, "--out", logits_path)
    ours = torch.cat(torch.load(logits_path))
    exported = os.path.join(work, f"exported_{arch}.safetensors")
    run("export", ours_dir, "--out", exported)
    back = rm.load(exported)
    with torch.no_grad():
        back_logits = back(x)
    results[arch] = {
        "checkpoint_bytes": os.path.getsize(ckpt),
        "import_seconds": round(t_import, 2),
        "max_abs_logit": theirs.abs().max().item(),
        "import_vs_pytorch_max_abs_diff": (ours - theirs).abs().max().item(),
        "export_in_pytorch_vs_original_max_abs_diff": (back_logits - theirs).abs().max().item(),
    }
    print(arch, json.dumps(results[arch]), flush=True)

# A constructed set written in the released layout loads with the authors' own loader line,
# under torch.load's default (weights_only) unpickler.
from safetensors.torch import load_file  # noqa: E402
run("train", "--arch", "linear", "--epochs", "1", "--out", os.path.join(work, "digits"))
run("construct", "det", "--model", os.path.join(work, "digits", "latest"), "--steps", "10",
    "--limit", "300", "--out", os.path.join(work, "ddet"))
released = os.path.join(work, "ddet_digits")
run("export-dataset", os.path.join(work, "ddet"), "--out", released, "--chunk", "128")
ims = torch.cat(torch.load(os.path.join(released, "CIFAR_ims")))
labs = torch.cat(torch.load(os.path.join(released, "CIFAR_lab")))
chunks = sorted(os.listdir(os.path.join(work, "ddet", "chunks")))
ref = [load_file(os.path.join(work, "ddet", "chunks", c)) for c in chunks]
same = (torch.equal(ims.flatten(), torch.cat([r["images"].flatten() for r in ref]))
        and torch.equal(labs, torch.cat([r["labels"].long() for r in ref])))
results["released_layout"] = {"images": list(ims.shape), "labels": list(labs.shape),
                              "equal_to_our_chunks": same}
print("released_layout", json.dumps(results["released_layout"]), flush=True)

# Relative to the logits' size: the ImageNet ResNet-50's random weights give logits near 100.
ok = results["released_layout"]["equal_to_our_chunks"] and all(
    max(r["import_vs_pytorch_max_abs_diff"], r["export_in_pytorch_vs_original_max_abs_diff"])
    < 1e-4 * max(1.0, r["max_abs_logit"]) for k, r in results.items() if k != "released_layout")
print(json.dumps({"ok": ok, "torch": torch.__version__, "results": results}))
sys.exit(0 if ok else 1)
