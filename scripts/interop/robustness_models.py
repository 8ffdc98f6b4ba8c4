"""PyTorch equivalents of the `robustness` (Rust) architectures, under the module names that
`robustness export` writes and `robustness import --from pytorch` reads.

    import robustness_models as rm
    model = rm.load("model.safetensors")          # written by `robustness export`
    logits = model(images)                         # images: [N, C, H, W] float32 in [0, 1]

`load` returns `Wrapped(normalizer, model)`: the reference library's `AttackerModel` layout
without the attacker (`normalizer.new_mean` / `new_std`, then `model.*`). ResNet-18/50 and VGG-11
use the names of MadryLab `robustness.cifar_models`, so the same weights also load into those
classes; resnet18-imagenet / resnet50-imagenet those of torchvision's ResNets (and MadryLab's
`robustness.imagenet_models`). Needs torch and safetensors (scripts/python-env installs both).
"""
import json

import torch
import torch.nn as nn
import torch.nn.functional as F


class InputNormalize(nn.Module):
    """clamp(x, 0, 1), then per-channel (x - mean) / std (MadryLab's InputNormalize)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("new_mean", torch.as_tensor(mean, dtype=torch.float32)[:, None, None])
        self.register_buffer("new_std", torch.as_tensor(std, dtype=torch.float32)[:, None, None])

    def forward(self, x):
        return (torch.clamp(x, 0, 1) - self.new_mean) / self.new_std


class Wrapped(nn.Module):
    def __init__(self, normalizer, model):
        super().__init__()
        self.normalizer = normalizer
        self.model = model

    def forward(self, x):
        return self.model(self.normalizer(x))


class _Net(nn.Module):
    """Accepts the keywords MadryLab's AttackerModel passes (with_latent returns the
    representation too)."""

    def forward(self, x, with_latent=False, fake_relu=False, no_relu=False):
        latent = self.features_of(x)
        out = self.linear_of(latent)
        return (out, latent) if with_latent else out


class LinearNet(_Net):
    def __init__(self, c, h, w, k):
        super().__init__()
        self.linear = nn.Linear(c * h * w, k)

    def features_of(self, x):
        return x.flatten(1)

    def linear_of(self, z):
        return self.linear(z)


class MLP(_Net):
    def __init__(self, c, h, w, k, hidden=512):
        super().__init__()
        self.fc1 = nn.Linear(c * h * w, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.linear = nn.Linear(hidden, k)

    def features_of(self, x):
        return F.relu(self.fc2(F.relu(self.fc1(x.flatten(1)))))

    def linear_of(self, z):
        return self.linear(z)


class ConvBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)


class CNN(_Net):
    def __init__(self, c, h, w, k):
        super().__init__()
        widths = [c, 32, 64, 128]
        self.blocks = nn.ModuleList(ConvBlock(a, b) for a, b in zip(widths, widths[1:]))
        self.fc = nn.Linear(128 * max(h // 8, 1) * max(w // 8, 1), 256)
        self.linear = nn.Linear(256, k)

    def features_of(self, x):
        for b in self.blocks:
            x = b(x)
        return F.relu(self.fc(x.flatten(1)))

    def linear_of(self, z):
        return self.linear(z)


def projection(module, name, cin, cout, stride):
    """The skip path's 1x1 conv + batch norm when the shape changes, as `module.<name>`:
    MadryLab's CIFAR blocks call it `shortcut` (an empty Sequential otherwise), torchvision's
    `downsample` (None otherwise)."""
    if stride != 1 or cin != cout:
        proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    else:
        proj = nn.Sequential() if name == "shortcut" else None
    setattr(module, name, proj)
    module.projection_name = name


def skip(module, x):
    proj = getattr(module, module.projection_name)
    return x if proj is None else proj(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, projection_name="shortcut"):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        projection(self, projection_name, cin, planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + skip(self, x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, projection_name="shortcut"):
        super().__init__()
        out = 4 * planes
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        projection(self, projection_name, cin, out, stride)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + skip(self, x))


class ResNet(_Net):
    """CIFAR ResNet (3x3 stem, no max-pool) with MadryLab's names; global average pooling
    (MadryLab's avg_pool2d(out, 4) on 32x32 inputs). With imagenet=True torchvision's ResNet
    (7x7 stride-2 stem, 3x3 stride-2 max-pool) with its names (`downsample`, `fc`), which
    MadryLab's `imagenet_models` keep: torchvision's and MadryLab's state dicts load into it."""

    def __init__(self, block, counts, c, k, imagenet=False):
        super().__init__()
        self.imagenet = imagenet
        self.in_planes = 64
        self.conv1 = (nn.Conv2d(c, 64, 7, 2, 3, bias=False) if imagenet
                      else nn.Conv2d(c, 64, 3, 1, 1, bias=False))
        self.bn1 = nn.BatchNorm2d(64)
        proj = "downsample" if imagenet else "shortcut"
        for i, (planes, n) in enumerate(zip([64, 128, 256, 512], counts)):
            layers = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(block(self.in_planes, planes, stride, projection_name=proj))
                self.in_planes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.head_name = "fc" if imagenet else "linear"
        setattr(self, self.head_name, nn.Linear(512 * block.expansion, k))

    def features_of(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if self.imagenet:
            x = F.max_pool2d(x, 3, 2, 1)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def linear_of(self, z):
        return getattr(self, self.head_name)(z)


VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG(_Net):
    """VGG-11-BN with MadryLab's `features` indices; a max-pool is an Identity once the map is
    1 pixel wide (small inputs), as in the Rust model."""

    def __init__(self, c, h, w, k):
        super().__init__()
        layers, side = [], min(h, w)
        for x in VGG11:
            if x == "M":
                layers.append(nn.MaxPool2d(2, 2) if side >= 2 else nn.Identity())
                side = side // 2 if side >= 2 else side
            else:
                layers += [nn.Conv2d(c, x, 3, padding=1), nn.BatchNorm2d(x), nn.ReLU(inplace=True)]
                c = x
        layers.append(nn.AvgPool2d(1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, k)

    def features_of(self, x):
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def linear_of(self, z):
        return self.classifier(z)


def build(arch, channels, height, width, num_classes):
    """The bare network (no normaliser) of `arch`."""
    c, h, w, k = channels, height, width, num_classes
    return {
        "linear": lambda: LinearNet(c, h, w, k),
        "mlp": lambda: MLP(c, h, w, k),
        "cnn": lambda: CNN(c, h, w, k),
        "resnet18": lambda: ResNet(BasicBlock, [2, 2, 2, 2], c, k),
        "resnet50": lambda: ResNet(Bottleneck, [3, 4, 6, 3], c, k),
        "vgg11": lambda: VGG(c, h, w, k),
        "resnet18-imagenet": lambda: ResNet(BasicBlock, [2, 2, 2, 2], c, k, imagenet=True),
        "resnet50-imagenet": lambda: ResNet(Bottleneck, [3, 4, 6, 3], c, k, imagenet=True),
    }[arch]()


def load(path):
    """A `robustness export` file -> Wrapped(normalizer, model) in eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, "pt") as f:
        spec = json.loads(f.metadata()["spec"])
    net = build(spec["arch"], spec["channels"], spec["height"], spec["width"], spec["num_classes"])
    model = Wrapped(InputNormalize(spec["mean"], spec["std"]), net)
    model.load_state_dict(load_file(path), strict=True)
    return model.eval()
