"""Building the zoo's networks with timm: the pretrained cfgs of the paper's settings, and the checks before a build."""

import torch.nn as nn
from timm.models import build_model_with_cfg, resolve_pretrained_cfg

from ..facts import ARCHITECTURES, BACKBONES, CHECKOUT_WEIGHTS, DATASETS, HF_ORG, PAPER_TAGS, published
from ..fsr_core import FSR
from ..weight_files import check_one_weights_file

# Checks of a `local-dir:` folder's config.json before timm builds from it: fsr_models.hf adds its config's, so that
# timm refuses the config.json that transformers refuses, without the networks depending on the transformers layer.
FOLDER_CONFIG_CHECKS = []


def _cfg(arch: str, tag: str, reduction: int, hub_names: frozenset[str], **kwargs) -> dict:
    data = DATASETS[tag.split("_", 1)[1]]
    name = f"{arch}.{tag}"
    size = data.input_size
    return {
        "hf_hub_id": f"{HF_ORG}/{name}" if name in hub_names else None,
        "num_classes": data.num_classes,
        "label_names": data.label_names,
        "input_size": size,
        "pool_size": (size[1] // reduction, size[2] // reduction),  # forward_features' map at input_size
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


def paper_cfgs(backbone: str, **kwargs) -> dict[str, dict]:
    """One cfg per paper setting of both architectures of `backbone` (with FSR, plain), "arch.tag" -> cfg, for
    `generate_default_cfgs`."""
    reduction = BACKBONES[backbone].reduction  # the stride of forward_features' output
    hub_names = published()  # read once, not per tag
    return {
        f"{arch}.{tag}": _cfg(arch, tag, reduction, hub_names, **kwargs)
        for arch in ARCHITECTURES[backbone]
        for tag in PAPER_TAGS
    }


class NoPublishedWeights(RuntimeError):
    """pretrained=True for a tag whose weights are not on the Hub; says what exists and the line that loads it."""

    def __init__(self, name: str):
        self.name = name
        self.folder = CHECKOUT_WEIGHTS / name  # trained weights beside the code, in a checkout
        variant = name.split(".")[0]
        published_tags = sorted(p for p in published() if p.startswith(f"{variant}.")) or "none yet"
        if self.folder.is_dir():
            where = (
                f"this checkout has them in {self.folder}: "
                f"timm.create_model('local-dir:{self.folder}', pretrained=True) loads them"
            )
        else:
            trained = sorted(p.name for p in CHECKOUT_WEIGHTS.glob(f"{variant}.*")) if CHECKOUT_WEIGHTS.is_dir() else []
            where = (
                f"{variant}'s tags with published weights: {published_tags}; trained weights in this checkout: "
                f"{trained or 'none'}. Use pretrained=False for random init, or load a saved folder with "
                "timm.create_model('local-dir:<folder>', pretrained=True)"
            )
        super().__init__(f"No pretrained weights are published on the Hub for {name}; {where}")


def check_pretrained_available(variant: str, pretrained: bool, kwargs: dict) -> None:
    """Fail before building when pretrained weights are asked for and none exist (timm would say less)."""
    if not pretrained:
        return
    cfg = resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.get("pretrained_cfg"),
        pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"),
    )
    if not (cfg.has_weights or cfg.state_dict is not None or cfg.source == "local-dir"):
        raise NoPublishedWeights(f"{variant}.{cfg.tag}")


def build_fsr(channels: int, device=None, dtype=None, **kwargs) -> FSR:
    """An FSR module (`kwargs`: FSR's) on timm's `device` / `dtype`: FSR takes neither, so it is moved there."""
    return FSR(channels, **kwargs).to(device=device, dtype=dtype)


def build_network(cls: type, variant: str, pretrained: bool, **kwargs) -> nn.Module:
    """timm's `build_model_with_cfg` for a zoo network, after `check_pretrained_available` and, for a `local-dir:`
    folder, the check that it holds one whole weights file (timm reads one file of a folder, whatever else is
    there); no copy of the weights stays in the model's pretrained_cfg."""
    check_pretrained_available(variant, pretrained, kwargs)
    cfg = kwargs.get("pretrained_cfg")
    if pretrained and isinstance(cfg, dict) and cfg.get("source") == "local-dir":
        for check in FOLDER_CONFIG_CHECKS:
            check(cfg["file"])
        check_one_weights_file(cfg["file"])
    model = build_model_with_cfg(cls, variant, pretrained, **kwargs)
    model.pretrained_cfg.pop("state_dict", None)  # loaded into the network by now
    return model
