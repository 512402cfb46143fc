"""CIFAR ResNet-18 (3x3 stem, no max-pool, BasicBlocks [2, 2, 2, 2]) with and without FSR, and with the feature-level
defenses FSR's Table 4 compares with (CAS, CIFS, Feature Denoising).

FSR sits after layer4 (512 x 4 x 4 at 32x32 inputs), before global pooling, as in the paper (Sec. 4.1). CAS and CIFS
follow each of layer4's two blocks, as their authors place them in ResNet-18; Feature Denoising follows each stage,
as Xie et al. place it in their ResNets (`fd_stages=(4,)`: after layer4 only, where the others sit).
"""

# No `from __future__ import annotations`: torch.fx writes forward's annotations into the code it generates, which
# TorchScript then compiles (timm's FX-to-TorchScript route), and strings are no types there.
from typing import List, Optional

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, downsample_conv

from fsr_models.defenses import CAS, CIFS, DefenseOutput, DenoisingBlock
from fsr_models.defenses.cifs import PROBE_HIDDEN
from fsr_models.facts.networks import BACKBONES
from fsr_models.models._build import build_fsr, build_network, defense_cfgs, zoo_cfgs
from fsr_models.models._fsrnet import FSRNet, checked_images
from fsr_models.models._init import init_pytorch_default

__all__ = ["CifarResNet", "DefendedBlock", "DefendedStage"]

# The classes of CAS's and CIFS's auxiliary heads in a network built without a classifier (num_classes=0): CIFAR-10's.
DEFAULT_AUX_CLASSES = 10


class DefendedBlock(nn.Module):
    """A residual block followed by CAS or CIFS (`defense`), which takes the labels and can give its auxiliary
    logits: appended to `aux_logits` when that list is given (eager mode)."""

    def __init__(self, block: nn.Module, defense: nn.Module):
        super().__init__()
        self.block = block
        self.defense = defense

    def forward(
        self, x: torch.Tensor, targets: Optional[torch.Tensor] = None, aux_logits: Optional[List[torch.Tensor]] = None
    ) -> torch.Tensor:
        x = self.block(x)
        if aux_logits is not None and not torch.jit.is_scripting():
            x, aux = self.defense(x, targets, return_aux=True)
            aux_logits.append(aux)
            return x
        return self.defense(x, targets)


class DefendedStage(nn.Sequential):
    """A stage of `DefendedBlock`s. Called with the features alone (timm's feature extraction, TorchScript, FX) its
    modules choose their masks by their own predictions; the network's `forward(x, targets=...)` passes the labels."""

    def forward(
        self, x: torch.Tensor, targets: Optional[torch.Tensor] = None, aux_logits: Optional[List[torch.Tensor]] = None
    ) -> torch.Tensor:
        for block in self:
            x = block(x, targets, aux_logits)
        return x


class CifarResNet(FSRNet):
    """ResNet for small images, with FSR after the stages listed in `fsr_stages` (1-4; empty for the plain net), or
    with one of the defenses FSR is compared with (`cas_stages`, `cifs_stages`, `fd_stages`).

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
        cas_stages: tuple[int, ...] = (),
        cifs_stages: tuple[int, ...] = (),
        fd_stages: tuple[int, ...] = (),
        aux_classes: int | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"give four stages, a width for each: layers {tuple(layers)}, widths {tuple(widths)}")
        placements = dict(fsr_stages=fsr_stages, cas_stages=cas_stages, cifs_stages=cifs_stages, fd_stages=fd_stages)
        for key, stages in placements.items():
            if not set(stages) <= set(range(1, len(widths) + 1)):
                raise ValueError(f"{key} of a ResNet must be in 1..{len(widths)}, got {tuple(stages)}")
        if sum(bool(stages) for stages in placements.values()) > 1:
            raise ValueError(f"give one defense's stages, FSR's or another's: got {placements}")
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.fsr_stages = tuple(fsr_stages)
        self.cas_stages, self.cifs_stages, self.fd_stages = tuple(cas_stages), tuple(cifs_stages), tuple(fd_stages)
        aux_classes = aux_classes or num_classes or DEFAULT_AUX_CLASSES
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
            if stage in cas_stages:
                blocks = [DefendedBlock(block, CAS(width, aux_classes, **dd)) for block in blocks]
            elif stage in cifs_stages:
                hidden = [PROBE_HIDDEN] * (depth - 1) + [None]
                blocks = [DefendedBlock(b, CIFS(width, aux_classes, h, **dd)) for b, h in zip(blocks, hidden)]
            defended = stage in cas_stages or stage in cifs_stages
            self.add_module(f"layer{stage}", (DefendedStage if defended else nn.Sequential)(*blocks))
            out_module = f"layer{stage}"
            if stage in fsr_stages:
                self.add_module(f"fsr{stage}", build_fsr(width, **fsr_args, **dd))
                out_module = f"fsr{stage}"
            if stage in fd_stages:
                self.add_module(f"fd{stage}", DenoisingBlock(width, **dd))
                out_module = f"fd{stage}"
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=out_module))
            in_chs = width

        self.num_features = in_chs
        self.pre_logits = nn.Identity()
        self.reset_classifier(num_classes, global_pool)
        self.weight_init(self.modules())
        for m in self.modules():  # Feature Denoising keeps its own initialisation: identity at the start
            if isinstance(m, DenoisingBlock):
                m.reset_parameters()

    def _forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        if hasattr(self, "fsr1"):
            x = self.fsr1(x)
        if hasattr(self, "fd1"):
            x = self.fd1(x)
        x = self.layer2(x)
        if hasattr(self, "fsr2"):
            x = self.fsr2(x)
        if hasattr(self, "fd2"):
            x = self.fd2(x)
        x = self.layer3(x)
        if hasattr(self, "fsr3"):
            x = self.fsr3(x)
        if hasattr(self, "fd3"):
            x = self.fd3(x)
        x = self.layer4(x)
        if hasattr(self, "fsr4"):
            x = self.fsr4(x)
        if hasattr(self, "fd4"):
            x = self.fd4(x)
        return x

    def forward(
        self,
        x: torch.Tensor,
        return_fsr: bool = False,
        targets: Optional[torch.Tensor] = None,
        return_defense: bool = False,
    ):
        """Logits. `return_fsr=True`: an `FSROutput` (FSRNet.forward). For CAS and CIFS (eager mode), `targets`, the
        labels, choose their masks in training mode as their authors train them, and `return_defense=True` returns a
        `DefenseOutput` with the auxiliary logits that their losses need."""
        # Under torch.fx tracing the arguments are Proxies: logits
        if isinstance(targets, torch.Tensor) or (isinstance(return_defense, bool) and return_defense):
            if torch.jit.is_scripting():
                raise RuntimeError(
                    "targets and return_defense are for training in eager mode: a scripted network returns logits"
                )
            out = self._forward_defense(x, targets)
            return out if return_defense else out.logits
        if isinstance(return_fsr, bool) and return_fsr:
            if torch.jit.is_scripting():
                raise RuntimeError("return_fsr=True is for training in eager mode: a scripted network returns logits")
            return self._forward_fsr(x)
        # forward_features written out: torch.fx keeps the call of checked_images where the traced forward is defined
        return self.forward_head(self._forward_features(checked_images(x, self.in_chans)))

    def _forward_defense(self, x: torch.Tensor, targets: torch.Tensor | None) -> DefenseOutput:
        """The feature layers in order, passing `targets` to the CAS or CIFS stages and collecting their auxiliary
        logits."""
        if not (self.cas_stages or self.cifs_stages or self.fd_stages):
            raise ValueError("targets and return_defense are for the networks with CAS, CIFS or Feature Denoising")
        if targets is not None and not (self.cas_stages or self.cifs_stages):
            raise ValueError("targets choose the masks of CAS and CIFS: this network has neither")
        x = checked_images(x, self.in_chans)
        aux_logits: list[torch.Tensor] = []
        for names in self._stages():
            for name in names:
                module = self.get_submodule(name)
                x = module(x, targets, aux_logits) if isinstance(module, DefendedStage) else module(x)
        return DefenseOutput(self.forward_head(x), tuple(aux_logits))


def _create(variant: str, pretrained: bool = False, **kwargs) -> CifarResNet:
    return build_network(CifarResNet, variant, pretrained, **kwargs)


default_cfgs = generate_default_cfgs({**zoo_cfgs("resnet18"), **defense_cfgs("resnet18")})


@register_model
def resnet18_fsr(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-18 with FSR after layer4 (the paper's model)."""
    return _create("resnet18_fsr", pretrained, **{"fsr_stages": BACKBONES["resnet18"].fsr_stages, **kwargs})


@register_model
def resnet18_plain(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-18 without FSR (the paper's baseline)."""
    return _create("resnet18_plain", pretrained, **{"fsr_stages": (), **kwargs})


@register_model
def resnet18_cas(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-18 with CAS after both layer4 blocks (Bai et al., ICLR 2021; FSR's Table 4)."""
    return _create("resnet18_cas", pretrained, **{"fsr_stages": (), "cas_stages": (4,), **kwargs})


@register_model
def resnet18_cifs(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-18 with CIFS after both layer4 blocks (Yan et al., ICML 2021; FSR's Table 4)."""
    return _create("resnet18_cifs", pretrained, **{"fsr_stages": (), "cifs_stages": (4,), **kwargs})


@register_model
def resnet18_fd(pretrained: bool = False, **kwargs) -> CifarResNet:
    """CIFAR ResNet-18 with a Feature Denoising block after each stage (Xie et al., CVPR 2019; FSR's Table 4);
    `fd_stages=(4,)` puts one after layer4 only."""
    return _create("resnet18_fd", pretrained, **{"fsr_stages": (), "fd_stages": (1, 2, 3, 4), **kwargs})
