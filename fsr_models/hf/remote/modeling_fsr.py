"""An fsr-zoo network as a transformers image classifier, in torch alone (see `configuration_fsr.py`).

The networks of "Feature Separation and Recalibration for Adversarial Robustness" (Kim et al., CVPR 2023): CIFAR
ResNet-18, VGG16 with BN and WideResNet-34-10, each with or without FSR modules, and ResNet-18 with one of the
defenses FSR is compared with (CAS, CIFS, Feature Denoising). The FSR module is the package's own, from
`fsr_core.py`, and so are the defenses' modules, from `cas.py`, `cifs.py` and `fd.py`. The layers carry the names of
the fsr-zoo package's timm models, so `model.safetensors` loads here unchanged. Inputs are RGB pixels in [0, 1] (no
normalisation), NCHW.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .cas import CAS
from .cifs import CIFS, PROBE_HIDDEN
from .configuration_fsr import DEFENSE_STAGES, FSRConfig
from .fd import DenoisingBlock
from .fsr_core import FSR, VGG16_STAGES, warn_unless_input_size


class BasicBlock(nn.Module):
    """ResNet's basic block (timm's layout: conv1 bn1 conv2 bn2, a 1x1 conv + BN `downsample` shortcut)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.downsample = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class PreActBlock(nn.Module):
    """WideResNet's pre-activation block; the 1x1 conv shortcut, when the shape changes, takes the activated input."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(in_chs, out_chs, 1, stride, bias=False) if stride != 1 or in_chs != out_chs else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        return self.conv2(F.relu(self.bn2(self.conv1(out)))) + shortcut


class DefendedBlock(nn.Module):
    """A residual block followed by CAS or CIFS, whose mask follows its own head's prediction (eval mode)."""

    def __init__(self, block: nn.Module, defense: nn.Module):
        super().__init__()
        self.block = block
        self.defense = defense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.defense(self.block(x))


def resnet_layers(
    config: FSRConfig, fsr, in_chans: int, layers=(2, 2, 2, 2), widths=(64, 128, 256, 512)
) -> tuple[list, int]:
    named = [("conv1", nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False)), ("bn1", nn.BatchNorm2d(widths[0]))]
    named.append(("act1", nn.ReLU(inplace=True)))
    defended = set(config.defense_stages or DEFENSE_STAGES.get(config.defense, ()))
    in_chs = widths[0]
    for stage, (width, depth) in enumerate(zip(widths, layers), start=1):
        stride = 1 if stage == 1 else 2
        blocks = [BasicBlock(in_chs, width, stride)] + [BasicBlock(width, width) for _ in range(depth - 1)]
        if stage in defended and config.defense == "cas":
            blocks = [DefendedBlock(block, CAS(width, config.num_labels)) for block in blocks]
        elif stage in defended and config.defense == "cifs":  # nonlinear probes, a linear one after the last block
            hidden = [PROBE_HIDDEN] * (depth - 1) + [None]
            blocks = [DefendedBlock(b, CIFS(width, config.num_labels, h)) for b, h in zip(blocks, hidden)]
        named.append((f"layer{stage}", nn.Sequential(*blocks)))
        if stage in config.fsr_stages:
            named.append((f"fsr{stage}", fsr(width)))
        if stage in defended and config.defense == "fd":
            named.append((f"fd{stage}", DenoisingBlock(width)))
        in_chs = width
    return named, in_chs


def vgg_layers(config: FSRConfig, fsr, in_chans: int, stages=VGG16_STAGES) -> tuple[list, int]:
    layers, in_chs = [], in_chans
    for stage, (width, convs) in enumerate(stages, start=1):
        for _ in range(convs):
            layers += [nn.Conv2d(in_chs, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            in_chs = width
        if stage in config.fsr_stages:
            layers.append(fsr(width))
        layers.append(nn.MaxPool2d(2, 2))
    return [("features", nn.Sequential(*layers))], in_chs


def wide_resnet_layers(
    config: FSRConfig, fsr, in_chans: int, depth: int = 34, widen_factor: int = 10
) -> tuple[list, int]:
    blocks_per_group = (depth - 4) // 6
    named, in_chs = [("conv1", nn.Conv2d(in_chans, 16, 3, padding=1, bias=False))], 16
    for group, width in enumerate((16 * widen_factor, 32 * widen_factor, 64 * widen_factor), start=1):
        stride = 1 if group == 1 else 2
        blocks = [
            PreActBlock(in_chs if i == 0 else width, width, stride if i == 0 else 1) for i in range(blocks_per_group)
        ]
        named.append((f"block{group}", nn.Sequential(*blocks)))
        if group == 3:  # pre-activation nets end with BN-ReLU, before FSR
            named += [("bn", nn.BatchNorm2d(width)), ("act", nn.ReLU(inplace=True))]
        if group in config.fsr_stages:
            named.append((f"fsr{group}", fsr(width)))
        in_chs = width
    return named, in_chs


BACKBONE_LAYERS = {"resnet18": resnet_layers, "vgg16": vgg_layers, "wrn34_10": wide_resnet_layers}


class FSRNetwork(nn.Module):
    """The feature layers, run in the order given, then global average pooling, `pre_logits` and the classifier."""

    def __init__(self, config: FSRConfig):
        super().__init__()
        args = dict(config.backbone_args or {})
        if args.pop("global_pool", "avg") != "avg":
            raise ValueError("this model pools otherwise than by averaging: load it with the fsr-zoo package")
        in_chans = args.pop("in_chans", 3)

        def fsr(channels: int) -> FSR:
            return FSR(
                channels,
                tau=config.fsr_tau,
                separation=config.fsr_separation,
                recalibration=config.fsr_recalibration,
                output=config.fsr_output,
            )

        named, width = BACKBONE_LAYERS[config.backbone](config, fsr, in_chans, **args)
        for name, layer in named:
            self.add_module(name, layer)
        self.feature_layers = [name for name, _ in named]
        self.pre_logits = nn.Identity()
        if config.backbone == "vgg16":
            self.pre_logits = nn.Sequential(
                nn.Linear(width, width), nn.ReLU(True), nn.Linear(width, width), nn.ReLU(True)
            )
        self.fc = nn.Linear(width, config.num_labels)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.feature_layers:
            x = getattr(self, name)(x)
        return x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pre_logits(features.mean((2, 3))))


class FSRPreTrainedModel(PreTrainedModel):
    config_class = FSRConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"


class FSRForImageClassification(FSRPreTrainedModel):
    """An fsr-zoo network: `pixel_values` in [0, 1] in, `ImageClassifierOutput` out (with `labels`, the
    cross-entropy `loss`)."""

    def __init__(self, config: FSRConfig):
        super().__init__(config)
        self.model = FSRNetwork(config)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, return_dict=None, **kwargs):
        warn_unless_input_size(pixel_values, self.config)
        features = self.model.forward_features(pixel_values)
        logits = self.model.forward_head(features)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return ImageClassifierOutput(loss=loss, logits=logits)
