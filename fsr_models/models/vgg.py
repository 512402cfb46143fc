"""VGG16 with batch norm for small images, with and without FSR.

Conv stages 64x2, 128x2, 256x3, 512x3, 512x3 (3x3 convs with bias, BN, ReLU), a 2x2 max-pool after each.
FSR sits after the 4th stage's convs, before its pool (512 x 4 x 4 at 32x32 inputs), as in the paper.
Classifier: global pool -> Linear 512-512 -> ReLU -> Linear 512-512 -> ReLU -> Linear 512-classes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import register_notrace_module
from timm.models import generate_default_cfgs, register_model

from fsr_models.facts.networks import BACKBONES
from fsr_models.fsr.fsr_core import VGG16_STAGES
from fsr_models.models._build import build_fsr, build_network, zoo_cfgs
from fsr_models.models._fsrnet import FSRNet
from fsr_models.models._init import init_vgg

__all__ = ["CifarVGG"]


@register_notrace_module  # torch.fx: a leaf, since its layout test (pooled or not) reads the input's shape
class PreLogitsMlp(nn.Sequential):
    """The two hidden layers of the VGG classifier; on an unpooled map (global_pool='') it acts per position."""

    def __init__(self, width: int, device=None, dtype=None):
        dd = {"device": device, "dtype": dtype}
        super().__init__(
            nn.Linear(width, width, **dd), nn.ReLU(inplace=True), nn.Linear(width, width, **dd), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.ndim == 4
        if spatial:
            x = x.permute(0, 2, 3, 1)
        for layer in self:  # not super().forward(): TorchScript has no super()
            x = layer(x)
        return x.permute(0, 3, 1, 2) if spatial else x


class CifarVGG(FSRNet):
    """VGG with BN, FSR after the conv stages listed in `fsr_stages` (1-5, before that stage's pool).

    Args are those of `CifarResNet`, with `stages` = ((width, convs), ...) in place of `layers` and `widths`.
    """

    weight_init = staticmethod(init_vgg)

    def __init__(
        self,
        stages: tuple[tuple[int, int], ...] = VGG16_STAGES,
        num_classes: int = 10,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        fsr_stages: tuple[int, ...] = BACKBONES["vgg16"].fsr_stages,
        fsr_tau: float = 0.1,
        fsr_separation: bool = True,
        fsr_recalibration: bool = True,
        fsr_output: str = "f_tilde",
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if not set(fsr_stages) <= set(range(1, len(stages) + 1)):
            raise ValueError(f"fsr_stages of a VGG must be in 1..{len(stages)}, got {tuple(fsr_stages)}")
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.fsr_stages = tuple(fsr_stages)
        self.backbone_args = dict(stages=[list(s) for s in stages])
        self.feature_info = []
        fsr_args = dict(tau=fsr_tau, separation=fsr_separation, recalibration=fsr_recalibration, output=fsr_output)
        layers: list[nn.Module] = []
        in_chs = in_chans
        for stage, (width, convs) in enumerate(stages, start=1):
            for _ in range(convs):
                conv = nn.Conv2d(in_chs, width, 3, padding=1, **dd)
                layers += [conv, nn.BatchNorm2d(width, **dd), nn.ReLU(inplace=True)]
                in_chs = width
            if stage in fsr_stages:
                layers.append(build_fsr(width, **fsr_args, **dd))
            # Features are taken before each pool, as timm's VGG does; the last pool follows the last feature.
            self.feature_info.append(
                dict(num_chs=width, reduction=2 ** (stage - 1), module=f"features.{len(layers) - 1}")
            )
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)

        self.num_features = in_chs
        self.pre_logits = PreLogitsMlp(in_chs, **dd)
        self.reset_classifier(num_classes, global_pool)
        self.weight_init(self.modules())

    def _forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _create(variant: str, pretrained: bool = False, **kwargs) -> CifarVGG:
    return build_network(CifarVGG, variant, pretrained, feature_cfg=dict(flatten_sequential=True), **kwargs)


default_cfgs = generate_default_cfgs(zoo_cfgs("vgg16", first_conv="features.0"))


@register_model
def vgg16_fsr(pretrained: bool = False, **kwargs) -> CifarVGG:
    """VGG16-BN with FSR after the 4th conv stage (the paper's model)."""
    return _create("vgg16_fsr", pretrained, **{"fsr_stages": BACKBONES["vgg16"].fsr_stages, **kwargs})


@register_model
def vgg16_plain(pretrained: bool = False, **kwargs) -> CifarVGG:
    """VGG16-BN without FSR (the paper's baseline)."""
    return _create("vgg16_plain", pretrained, **{"fsr_stages": (), **kwargs})
