"""Imports MadryLab `robustness` 1.2.1.post2 under today's PyTorch, for the interop scripts.

- Its code calls `.cuda()` unconditionally: on a CPU-only machine that becomes a no-op.
- `robustness.imagenet_models` (its VGG, AlexNet and SqueezeNet) imports
  `torchvision.models.utils.load_state_dict_from_url`, which torchvision removed in 0.13 (it is
  torch.hub's function); its ResNets need nothing from torchvision. That one function is
  provided without installing torchvision.

    from madry_compat import AttackerModel, cifar_models, imagenet_models
"""
import sys
import types

import torch
import torch.nn as nn

torch.Tensor.cuda = lambda self, *a, **k: self
nn.Module.cuda = lambda self, *a, **k: self

for _name in ["torchvision", "torchvision.models", "torchvision.models.utils"]:
    sys.modules.setdefault(_name, types.ModuleType(_name))
_utils = sys.modules["torchvision.models.utils"]
if not hasattr(_utils, "load_state_dict_from_url"):
    _utils.load_state_dict_from_url = torch.hub.load_state_dict_from_url

from robustness import cifar_models, imagenet_models  # noqa: E402,F401
from robustness.attacker import AttackerModel  # noqa: E402,F401
