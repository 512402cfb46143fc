"""The zoo's networks: the backbones, their registered names (with FSR, plain), and the Hub organisation that holds
their published weights."""

from __future__ import annotations

from dataclasses import dataclass

# The Hub organisation that holds every published checkpoint; repositories are named "<architecture>.<tag>".
HF_ORG = "fsr-zoo"


@dataclass(frozen=True)
class Backbone:
    name: str  # as a reader knows it
    fsr_stages: tuple[int, ...]  # the paper's FSR position: stages (1-based) followed by FSR
    num_features: int  # width of the final feature
    num_stages: int
    reduction: int  # stride of forward_features' output

    def architectures(self, key: str) -> tuple[str, str]:
        """The registered names of this backbone: (with FSR, plain)."""
        return f"{key}_fsr", f"{key}_plain"


BACKBONES = {
    "resnet18": Backbone("ResNet-18", (4,), 512, 4, 8),
    "vgg16": Backbone("VGG16", (4,), 512, 5, 32),
    "wrn34_10": Backbone("WideResNet-34-10", (3,), 640, 3, 4),
}
# Registered architecture names, FSR and plain, by backbone.
ARCHITECTURES = {key: backbone.architectures(key) for key, backbone in BACKBONES.items()}
# Tags of weights trained here with a recipe other than the paper's, which the tag names (a training config's `tag`),
# registered beside the paper's settings for both architectures of the backbone, so that timm finds them once
# published: backbone -> tags.
RECIPE_TAGS = {"vgg16": ("at_nfgsm_15ep_cifar10",)}

# The feature-level defenses FSR's Table 4 compares with, in ResNet-18 (registered as resnet18_<defense>), and the
# constructor argument that places each (stages followed by it).
DEFENSES = ("cas", "cifs", "fd")
DEFENSE_BACKBONE = "resnet18"
DEFENSE_NETWORKS = tuple(f"{DEFENSE_BACKBONE}_{defense}" for defense in DEFENSES)
DEFENSE_STAGE_ARGS = tuple(f"{defense}_stages" for defense in DEFENSES)


def twin_name(name: str) -> str | None:
    """The zoo's same network without FSR for an FSR one and with it for a plain one, as `name` is written
    ("resnet18_fsr.at_cifar10" -> "resnet18_plain.at_cifar10", tag kept), and without its defense for one of
    `DEFENSE_NETWORKS` (the plain ResNet-18); None for a name of no zoo network."""
    architecture, dot, tag = name.partition(".")
    backbone, _, kind = architecture.rpartition("_")
    if architecture in DEFENSE_NETWORKS:
        return f"{backbone}_plain{dot}{tag}"
    if backbone not in BACKBONES or kind not in ("fsr", "plain"):
        return None
    return f"{backbone}_{'plain' if kind == 'fsr' else 'fsr'}{dot}{tag}"
