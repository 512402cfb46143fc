"""What the three networks share: pretrained cfgs for the paper's settings and the timm-style interface."""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import create_classifier
from timm.models import resolve_pretrained_cfg

from ..fsr import FSR, FSROutput

# The Hub organisation that holds every published checkpoint; repositories are named "<arch>.<tag>".
HF_ORG = "fsr-zoo"

# "<arch>.<tag>" entries whose weights really exist on the Hub. A tag gets a weight source (hf_hub_id) only
# when it is listed here; every other tag fails loudly under pretrained=True.
PUBLISHED: frozenset[str] = frozenset()

CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SVHN_LABELS = tuple(str(d) for d in range(10))  # torchvision's SVHN maps the digit 0 to label 0
CIFAR100_LABELS = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree",
    "wolf", "woman", "worm",
)  # fmt: skip

# data set -> (num_classes, label_names, input_size). Tiny ImageNet's label names are the WordNet ids of the
# copy it is trained on; they are written into a checkpoint's config when it is trained, not guessed here.
DATASETS = {
    "cifar10": (10, CIFAR10_LABELS, (3, 32, 32)),
    "svhn": (10, SVHN_LABELS, (3, 32, 32)),
    "cifar100": (100, CIFAR100_LABELS, (3, 32, 32)),
    "tiny_imagenet": (200, None, (3, 64, 64)),
}
# The paper's settings (Sec. 4.1, Tables 1-2, supplementary): every method on CIFAR-10 and SVHN, AT elsewhere.
PAPER_TAGS = tuple(f"{method}_{data}" for data in ("cifar10", "svhn") for method in ("at", "trades", "mart")) + (
    "at_cifar100",
    "at_tiny_imagenet",
)


def _cfg(arch: str, tag: str, **kwargs) -> dict:
    num_classes, label_names, input_size = DATASETS[tag.split("_", 1)[1]]
    name = f"{arch}.{tag}"
    return {
        "hf_hub_id": f"{HF_ORG}/{name}" if name in PUBLISHED else None,
        "num_classes": num_classes,
        "label_names": label_names,
        "input_size": input_size,
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": (0.0, 0.0, 0.0),  # the models take [0, 1] pixels: the data config must pass them through
        "std": (1.0, 1.0, 1.0),
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "mit",
        "paper_ids": "arXiv:2303.13846",
        "paper_name": "Feature Separation and Recalibration for Adversarial Robustness",
        "origin_url": "https://github.com/wkim97/FSR",
        **kwargs,
    }


def paper_cfgs(arch: str, **kwargs) -> dict[str, dict]:
    """One cfg per paper setting, "arch.tag" -> cfg, for `generate_default_cfgs`."""
    return {f"{arch}.{tag}": _cfg(arch, tag, **kwargs) for tag in PAPER_TAGS}


def check_pretrained_available(variant: str, pretrained: bool, kwargs: dict) -> None:
    """Fail before building when pretrained weights are asked for and none exist (timm would say less)."""
    if not pretrained:
        return
    cfg = resolve_pretrained_cfg(
        variant, pretrained_cfg=kwargs.get("pretrained_cfg"), pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay")
    )
    if not (cfg.has_weights or cfg.state_dict is not None or cfg.source == "local-dir"):
        published = sorted(p for p in PUBLISHED if p.startswith(f"{variant}.")) or "none yet"
        raise RuntimeError(
            f"No pretrained weights are published for {variant}.{cfg.tag}; tags of {variant} with weights: "
            f"{published}. Use pretrained=False for random init, or load a saved folder with "
            f"pretrained_cfg_overlay=dict(file='<folder>/model.safetensors') or 'local-dir:<folder>'."
        )


class FSRNet(nn.Module):
    """The interface the three networks share, timm-style.

    `forward(x)` returns logits. `forward(x, return_fsr=True)` returns an `FSROutput` with the FSR parts the
    training losses need (call it through the DDP wrapper so gradient sync sees it). Subclasses set
    `weight_init`, build their layers (calling `weight_init(self.modules())` at the end), set `num_features`, `in_chans`, `fsr_stages`, `backbone_args` (the architecture's own keyword
    arguments, for configs) and `feature_info`, call `reset_classifier` last, and implement
    `_forward_features(x, fsr_parts)`, calling `self._run(module, x, fsr_parts)` for each FSR module.
    """

    num_classes: int
    num_features: int
    in_chans: int
    drop_rate: float = 0.0  # dropout before the classifier (timm's `drop_rate`; the paper uses none)
    # The authors' initialisation for this backbone, applied to a module list: the network's layers at build time,
    # transformers' `_init_weights` and the auxiliary heads of `FSRLoss.for_model` use the same function.
    weight_init: Callable[[Iterable[nn.Module]], None]

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor of images, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"expected images of shape (batch, {self.in_chans}, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected {self.in_chans} channels in dim 1 (NCHW), got shape {tuple(x.shape)}; "
                "channels-last images need x.permute(0, 3, 1, 2)"
            )
        if not x.is_floating_point():
            raise ValueError(f"expected float pixels in [0, 1], got dtype {x.dtype}; convert uint8 with x.float() / 255")

    @staticmethod
    def _run(module: nn.Module, x: torch.Tensor, fsr_parts: list | None) -> torch.Tensor:
        if fsr_parts is not None and isinstance(module, FSR):
            x, parts = module(x, return_parts=True)
            fsr_parts.append(parts)
            return x
        return module(x)

    def _forward_features(self, x: torch.Tensor, fsr_parts: list | None) -> torch.Tensor:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self._forward_features(x, None)

    def _pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_pool(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self._pre_logits(x)
        if pre_logits:
            return x
        return self.fc(F.dropout(x, self.drop_rate, self.training) if self.drop_rate else x)

    def forward(self, x: torch.Tensor, return_fsr: bool = False):
        self._check_input(x)
        fsr_parts = [] if return_fsr else None
        logits = self.forward_head(self._forward_features(x, fsr_parts))
        return FSROutput(logits, tuple(fsr_parts)) if return_fsr else logits

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    def fsr_modules(self) -> list[FSR]:
        return [m for m in self.modules() if isinstance(m, FSR)]

    def set_fsr_output(self, output: str) -> None:
        """Pass on another FSR feature (f_tilde, f_pos, f_neg, f_neg_recal) in every FSR module (Table 5)."""
        for m in self.fsr_modules():
            m.output = output

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Refuse weights that do not fit this architecture with a ValueError that names them."""
        own = self.state_dict()
        mismatched = [
            f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in state_dict.items()
            if k in own and tuple(v.shape) != tuple(own[k].shape)
        ]
        if mismatched:
            raise ValueError(
                f"weights do not fit {type(self).__name__} (num_classes={self.num_classes}): "
                + "; ".join(mismatched[:5])
                + ("; ..." if len(mismatched) > 5 else "")
                + ". Build the model with the checkpoint's config (num_classes, FSR settings) and load into that."
            )
        if strict:
            missing = sorted(set(own) - set(state_dict))
            unexpected = sorted(set(state_dict) - set(own))
            if missing or unexpected:
                raise ValueError(
                    f"weights do not fit {type(self).__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}. "
                    "Was the checkpoint made for another architecture or FSR setting?"
                )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


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
