"""WideResNet-34-10 (pre-activation, as in the TRADES code) with and without FSR.

Widths 16 / 160 / 320 / 640, five blocks per group, no dropout. FSR sits after group 3 and the final BN-ReLU
(640 x 8 x 8 at 32x32 inputs), before pooling. The authors' copy builds an extra, unused block inherited from the
TRADES code; it is left out here.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from fsr_models.facts.networks import BACKBONES
from fsr_models.models._build import build_fsr, build_network, zoo_cfgs
from fsr_models.models._fsrnet import FSRNet
from fsr_models.models._init import init_wide_resnet

__all__ = ["WideResNet"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3; a 1x1 conv shortcut (on the activated input) when the shape changes."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.bn1 = nn.BatchNorm2d(in_chs, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(out_chs, **dd)
        self.act2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False, **dd)
        self.shortcut = None
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Conv2d(in_chs, out_chs, 1, stride, bias=False, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(x))
        # The identity shortcut adds the raw input; a projection takes the activated one (TRADES' WRN).
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(self.act2(self.bn2(self.conv1(out))))
        return out + shortcut


class WideResNet(FSRNet):
    """WRN-depth-widen_factor for small images, FSR after the groups listed in `fsr_stages` (1-3).

    Other args are those of `CifarResNet`.
    """

    weight_init = staticmethod(init_wide_resnet)

    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        fsr_stages: tuple[int, ...] = BACKBONES["wrn34_10"].fsr_stages,
        fsr_tau: float = 0.1,
        fsr_separation: bool = True,
        fsr_recalibration: bool = True,
        fsr_output: str = "f_tilde",
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        if not set(fsr_stages) <= {1, 2, 3}:
            raise ValueError(f"fsr_stages of a WideResNet must be in 1..3, got {tuple(fsr_stages)}")
        blocks_per_group = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.fsr_stages = tuple(fsr_stages)
        self.backbone_args = dict(depth=depth, widen_factor=widen_factor)
        self.conv1 = nn.Conv2d(in_chans, 16, 3, padding=1, bias=False, **dd)
        self.feature_info = [dict(num_chs=16, reduction=1, module="conv1")]
        fsr_args = dict(tau=fsr_tau, separation=fsr_separation, recalibration=fsr_recalibration, output=fsr_output)

        # Children are registered in execution order: timm's features_only runs them so.
        in_chs, reduction = 16, 1
        for group, width in enumerate(widths, start=1):
            stride = 1 if group == 1 else 2
            reduction *= stride
            blocks = [
                PreActBlock(in_chs if i == 0 else width, width, stride if i == 0 else 1, **dd)
                for i in range(blocks_per_group)
            ]
            self.add_module(f"block{group}", nn.Sequential(*blocks))
            in_chs = width
            if group == len(widths):  # pre-activation nets end with BN-ReLU; FSR at group 3 follows it
                self.bn = nn.BatchNorm2d(width, **dd)
                self.act = nn.ReLU(inplace=True)
            out_module = "act" if group == len(widths) else f"block{group}"
            if group in fsr_stages:
                self.add_module(f"fsr{group}", build_fsr(width, **fsr_args, **dd))
                out_module = f"fsr{group}"
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=out_module))

        self.num_features = in_chs
        self.pre_logits = nn.Identity()
        self.reset_classifier(num_classes, global_pool)
        self.weight_init(self.modules())

    def _forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(self.conv1(x))
        if hasattr(self, "fsr1"):
            x = self.fsr1(x)
        x = self.block2(x)
        if hasattr(self, "fsr2"):
            x = self.fsr2(x)
        x = self.act(self.bn(self.block3(x)))
        if hasattr(self, "fsr3"):
            x = self.fsr3(x)
        return x


def _create(variant: str, pretrained: bool = False, **kwargs) -> WideResNet:
    # A stem and three groups: four feature levels, where timm's default asks for five.
    return build_network(WideResNet, variant, pretrained, feature_cfg=dict(out_indices=(0, 1, 2, 3)), **kwargs)


default_cfgs = generate_default_cfgs(zoo_cfgs("wrn34_10"))


@register_model
def wrn34_10_fsr(pretrained: bool = False, **kwargs) -> WideResNet:
    """WideResNet-34-10 with FSR after group 3 (the paper's model)."""
    return _create("wrn34_10_fsr", pretrained, **{"fsr_stages": BACKBONES["wrn34_10"].fsr_stages, **kwargs})


@register_model
def wrn34_10_plain(pretrained: bool = False, **kwargs) -> WideResNet:
    """WideResNet-34-10 without FSR (the paper's baseline)."""
    return _create("wrn34_10_plain", pretrained, **{"fsr_stages": (), **kwargs})
