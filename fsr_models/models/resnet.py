"""CIFAR ResNet-18 (3x3 stem, no max-pool, BasicBlocks [2, 2, 2, 2]) with and without FSR.

FSR sits after layer4 (512 x 4 x 4 at 32x32 inputs), before global pooling, as in the paper (Sec. 4.1).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, downsample_conv

from fsr_models.facts.networks import BACKBONES
from fsr_models.models._build import build_fsr, build_network, paper_cfgs
from fsr_models.models._fsrnet import FSRNet
from fsr_models.models._init import init_pytorch_default

__all__ = ["CifarResNet"]


class CifarResNet(FSRNet):
    """ResNet for small images, with FSR after the stages listed in `fsr_stages` (1-4; empty for the plain net).

    Args:
        layers: BasicBlocks per stage (four stages).
        widths: channels per stage (the stem has the first stage's); narrower nets make quick tests.
        num_classes: classifier outputs (0 for a feature extractor).
        in_chans: input channels.
        global_pool: timm pool type ('avg', '' to keep the spatial map, ...).
        drop_rate: dropout before the classifier (timm's training script passes it).
        fsr_stages: stages (1-based) followed by an FSR module.
        fsr_tau, fsr_separation, fsr_recalibration, fsr_output: passed to every `FSR` module.
        device, dtype: where and in which dtype to create parameters (timm's factory arguments).
    """

    weight_init = staticmethod(init_pytorch_default)  # the authors' ResNet-18 keeps PyTorch's default init

    def __init__(
        self,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        widths: tuple[int, ...] = (64, 128, 256, 512),
        num_classes: int = 10,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        fsr_stages: tuple[int, ...] = BACKBONES["resnet18"].fsr_stages,
        fsr_tau: float = 0.1,
        fsr_separation: bool = True,
        fsr_recalibration: bool = True,
        fsr_output: str = "f_tilde",
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"give four stages, a width for each: layers {tuple(layers)}, widths {tuple(widths)}")
        if not set(fsr_stages) <= set(range(1, len(widths) + 1)):
            raise ValueError(f"fsr_stages of a ResNet must be in 1..{len(widths)}, got {tuple(fsr_stages)}")
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.fsr_stages = tuple(fsr_stages)
        self.backbone_args = dict(layers=list(layers), widths=list(widths))
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(widths[0], **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.feature_info = [dict(num_chs=widths[0], reduction=1, module="act1")]

        fsr_args = dict(tau=fsr_tau, separation=fsr_separation, recalibration=fsr_recalibration, output=fsr_output)
        # Children are registered in execution order (stage, then its FSR): timm's features_only runs them so.
        in_chs, reduction = widths[0], 1
        for stage, (width, depth) in enumerate(zip(widths, layers), start=1):
            stride = 1 if stage == 1 else 2
            reduction *= stride
            downsample = downsample_conv(in_chs, width, 1, stride, **dd) if stride != 1 or in_chs != width else None
            blocks = [BasicBlock(in_chs, width, stride, downsample, **dd)]
            blocks += [BasicBlock(width, width, **dd) for _ in range(depth - 1)]
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
            out_module = f"layer{stage}"
            if stage in fsr_stages:
                self.add_module(f"fsr{stage}", build_fsr(width, **fsr_args, **dd))
                out_module = f"fsr{stage}"
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=out_module))
            in_chs = width

        self.num_features = in_chs
        self.pre_logits = nn.Identity()
        self.reset_classifier(num_classes, global_pool)
        self.weight_init(self.modules())

    def _forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        if hasattr(self, "fsr1"):
            x = self.fsr1(x)
        x = self.layer2(x)
        if hasattr(self, "fsr2"):
            x = self.fsr2(x)
        x = self.layer3(x)
        if hasattr(self, "fsr3"):
            x = self.fsr3(x)
        x = self.layer4(x)
        if hasattr(self, "fsr4"):
            x = self.fsr4(x)
        return x


def _create(variant: str, pretrained: bool = False, **kwargs) -> CifarResNet:
    return build_network(CifarResNet, variant, pretrained, **kwargs)


default_cfgs = generate_default_cfgs(paper_cfgs("resnet18"))


@register_model
def resnet18_fsr(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-18 with FSR after layer4 (the paper's model)."""
    return _create("resnet18_fsr", pretrained, **{"fsr_stages": BACKBONES["resnet18"].fsr_stages, **kwargs})


@register_model
def resnet18_plain(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-18 without FSR (the paper's baseline)."""
    return _create("resnet18_plain", pretrained, **{"fsr_stages": (), **kwargs})
