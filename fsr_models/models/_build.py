"""Building the zoo's networks with timm: the pretrained cfgs of the paper's settings, and the checks before a build."""

import torch.nn as nn
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from timm.models import build_model_with_cfg, resolve_pretrained_cfg

from fsr_models.facts.datasets import DATASETS, tag_dataset
from fsr_models.facts.networks import ARCHITECTURES, BACKBONES, HF_ORG, RECIPE_TAGS
from fsr_models.facts.paper import PAPER_TAGS
from fsr_models.fsr.fsr_core import FSR
from fsr_models.hub.weight_files import WEIGHTS_NAME, check_one_weights_file

# Checks of a `local-dir:` folder's config.json before timm builds from it: fsr_models.hf adds its config's, so that
# timm refuses the config.json that transformers refuses, without the networks depending on the transformers layer.
FOLDER_CONFIG_CHECKS = []
# Where a git checkout of fsr-zoo keeps trained weights, named in messages (the library never looks there itself).
CHECKOUT_FOLDERS = "hub/weights/<architecture>.<tag>"


def _cfg(arch: str, tag: str, reduction: int, **kwargs) -> dict:
    data = DATASETS[tag_dataset(tag)]
    name = f"{arch}.{tag}"
    size = data.input_size
    return {
        # Every paper setting has its repository id, as timm's cfgs do: whether its weights are uploaded is the Hub's
        # to say when they are asked for (`NoPublishedWeights`). Only the safetensors file, never a pickle.
        "hf_hub_id": f"{HF_ORG}/{name}",
        "hf_hub_filename": WEIGHTS_NAME,
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


def zoo_cfgs(backbone: str, **kwargs) -> dict[str, dict]:
    """One cfg per tag of both architectures of `backbone`, "arch.tag" -> cfg, for `generate_default_cfgs`: the
    paper's settings (PAPER_TAGS), then the recipes of weights trained here (RECIPE_TAGS)."""
    reduction = BACKBONES[backbone].reduction  # the stride of forward_features' output
    tags = PAPER_TAGS + RECIPE_TAGS.get(backbone, ())
    return {f"{arch}.{tag}": _cfg(arch, tag, reduction, **kwargs) for arch in ARCHITECTURES[backbone] for tag in tags}


# The defenses FSR's Table 4 compares with (ResNet-18, AT on CIFAR-10): their papers and the authors' code.
DEFENSE_PAPERS = {
    "cas": dict(
        paper_ids="arXiv:2103.08307",
        paper_name="Improving Adversarial Robustness via Channel-wise Activation Suppressing",
        origin_url="https://github.com/bymavis/CAS_ICLR2021",
    ),
    "cifs": dict(
        paper_ids="arXiv:2102.05311",
        paper_name="CIFS: Improving Adversarial Robustness of CNNs via Channel-wise Importance-based Feature Selection",
        origin_url="https://github.com/HanshuYAN/CIFS",
    ),
    "fd": dict(
        paper_ids="arXiv:1812.03411",
        paper_name="Feature Denoising for Improving Adversarial Robustness",
        origin_url="https://github.com/facebookresearch/ImageNet-Adversarial-Training",
    ),
}


def defense_cfgs(backbone: str) -> dict[str, dict]:
    """The cfgs of `backbone` with each defense of DEFENSE_PAPERS, "arch.tag" -> cfg, for `generate_default_cfgs`:
    Table 4's setting only (`at_cifar10`), each citing its defense's paper."""
    reduction = BACKBONES[backbone].reduction
    return {
        f"{backbone}_{defense}.at_cifar10": _cfg(f"{backbone}_{defense}", "at_cifar10", reduction, **paper)
        for defense, paper in DEFENSE_PAPERS.items()
    }


class NoPublishedWeights(RuntimeError):
    """pretrained=True for a name whose weights cannot be had: not on the Hub, or not cached while the Hub cannot be
    reached (`offline`); says what loads instead."""

    def __init__(self, name: str, offline: bool = False):
        self.name, self.offline = name, offline
        # what a command says after the name it was given
        self.reason = (
            "has no pretrained weights in the local cache, and the Hub, where they would be if uploaded, cannot be "
            "reached (no network, or HF_HUB_OFFLINE is set)"
            if offline
            else "has no weights published on the Hub yet"
        )
        super().__init__(
            f"{name} {self.reason} ({HF_ORG}/{name}); use pretrained=False for random init, or load trained weights "
            "from their folder with timm.create_model('local-dir:<folder>', pretrained=True) (a checkout of fsr-zoo "
            f"holds its trained weights in {CHECKOUT_FOLDERS})"
        )


def pretrained_name(variant: str, pretrained: bool, kwargs: dict) -> str | None:
    """'<architecture>.<tag>' of a build with pretrained weights, as timm resolves its pretrained cfg (None without
    them); fails before building when none are named (timm would say less)."""
    if not pretrained:
        return None
    cfg = resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.get("pretrained_cfg"),
        pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"),
    )
    name = f"{variant}.{cfg.tag}" if cfg.tag else variant
    if not (cfg.has_weights or cfg.state_dict is not None or cfg.source == "local-dir"):
        raise NoPublishedWeights(name)
    return name


def build_fsr(channels: int, device=None, dtype=None, **kwargs) -> FSR:
    """An FSR module (`kwargs`: FSR's) on timm's `device` / `dtype`: FSR takes neither, so it is moved there."""
    return FSR(channels, **kwargs).to(device=device, dtype=dtype)


def build_network(cls: type, variant: str, pretrained: bool, **kwargs) -> nn.Module:
    """timm's `build_model_with_cfg` for a zoo network, after `pretrained_name`'s check and, for a `local-dir:`
    folder, the check that it holds one whole weights file (timm reads one file of a folder, whatever else is
    there); no copy of the weights stays in the model's pretrained_cfg."""
    name = pretrained_name(variant, pretrained, kwargs)
    cfg = kwargs.get("pretrained_cfg")
    if pretrained and isinstance(cfg, dict) and cfg.get("source") == "local-dir":
        for check in FOLDER_CONFIG_CHECKS:
            check(cfg["file"])
        check_one_weights_file(cfg["file"])
    try:
        model = build_model_with_cfg(cls, variant, pretrained, **kwargs)
    except LocalEntryNotFoundError as e:
        raise NoPublishedWeights(name, offline=True) from e
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise NoPublishedWeights(name) from e
    model.pretrained_cfg.pop("state_dict", None)  # loaded into the network by now
    return model
