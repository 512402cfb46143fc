"""The authors' weight initialisation of each backbone, applied to a list of modules."""

import math
from typing import Iterable

import torch.nn as nn


def init_pytorch_default(modules: Iterable[nn.Module]) -> None:
    """PyTorch's own initialisation (Kaiming-uniform, a = sqrt(5), for conv and linear weights; uniform biases within
    1/sqrt(fan_in); unit BN): the authors' ResNet-18 has no init code and keeps it. Written out rather than through
    `reset_parameters()` so that BN running statistics stay untouched and every draw goes through `nn.init.*`."""
    for m in modules:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
            if m.bias is not None:
                bound = 1 / math.sqrt(nn.init._calculate_fan_in_and_fan_out(m.weight)[0])
                nn.init.uniform_(m.bias, -bound, bound)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_vgg(modules: Iterable[nn.Module]) -> None:
    """The authors' VGG16 (`vgg_fsr.py`): Kaiming-normal fan-out convs, unit BN, N(0, 0.01) linears, zero biases."""
    for m in modules:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)


def init_wide_resnet(modules: Iterable[nn.Module]) -> None:
    """The authors' WRN-34-10 (`wideresnet34_fsr.py`, from TRADES): convs N(0, sqrt(2 / (k * k * out_channels))),
    unit BN, linears with PyTorch's default weight and a zero bias."""
    for m in modules:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # the same N(0, 2 / (k*k*out))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
            nn.init.zeros_(m.bias)
