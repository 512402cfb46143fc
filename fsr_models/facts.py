"""The zoo's facts, each written once: the backbones, the data sets, the paper's protocol and recipe, the Hub.

Models, data, training, evaluation and cards read them from here. This module imports nothing of the package, so
any module may import it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

# The Hub organisation that holds every published checkpoint; repositories are named "<architecture>.<tag>".
HF_ORG = "fsr-zoo"
# The "<architecture>.<tag>" entries whose weights are on the Hub, kept by `hub/publish.py` after each upload.
PUBLISHED_FILE = Path(__file__).with_name("published.json")
# Where a checkout of the repository keeps trained weights, one "<architecture>.<tag>" folder each (absent from an
# installed wheel).
CHECKOUT_WEIGHTS = Path(__file__).resolve().parents[1] / "hub" / "weights"

# The paper's protocol (Sec. 4.1): L-inf eps 8/255 on [0, 1] pixels, 100 epochs, lr given per 128 images.
PAPER_EPS = 8 / 255
PAPER_EPOCHS = 100
LR_BATCH = 128


def is_paper_eps(eps: float) -> bool:
    """Whether `eps` is the paper's 8/255 (as a float written and read back may be)."""
    return math.isclose(eps, PAPER_EPS, abs_tol=1e-7)


def scaled_lr(lr_per_128: float, batch_size: int) -> float:
    """The learning rate of a batch of `batch_size` for a config's `lr_per_128`, scaled linearly."""
    return lr_per_128 * batch_size / LR_BATCH


def milestone_epochs(fractions: list[float], epochs: int) -> list[int]:
    """The epochs after which the learning rate drops, for milestones given as fractions of `epochs`."""
    return [round(f * epochs) for f in fractions]


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


def twin_name(name: str) -> str | None:
    """The zoo's same network without FSR for an FSR one and with it for a plain one, as `name` is written
    ("resnet18_fsr.at_cifar10" -> "resnet18_plain.at_cifar10", tag kept); None for a name of no zoo network."""
    architecture, dot, tag = name.partition(".")
    backbone, _, kind = architecture.rpartition("_")
    if backbone not in BACKBONES or kind not in ("fsr", "plain"):
        return None
    return f"{backbone}_{'plain' if kind == 'fsr' else 'fsr'}{dot}{tag}"


CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SVHN_LABELS = tuple(str(d) for d in range(10))  # torchvision's SVHN maps the digit 0 to label 0
CIFAR100_LABELS = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)


@dataclass(frozen=True)
class Dataset:
    name: str  # as a reader knows it
    num_classes: int
    # None for Tiny ImageNet: its label names are the WordNet ids of the copy it is trained on, written into a
    # checkpoint's config when it is trained, not guessed here.
    label_names: tuple[str, ...] | None
    input_size: tuple[int, int, int]
    train_images: int
    hub_id: str  # the data set on the Hub, for model-card metadata
    test_split: str = "test"  # the split a model is tested on (Tiny ImageNet: its labelled validation set)
    torchvision: bool = True  # torchvision can download it
    # The paper's training settings that differ from CIFAR-10's (Sec. 4.1): a config that names the data set and
    # not these keys gets them.
    recipe: dict = field(default_factory=dict)


DATASETS = {
    "cifar10": Dataset("CIFAR-10", 10, CIFAR10_LABELS, (3, 32, 32), 50_000, "uoft-cs/cifar10"),
    "svhn": Dataset(
        "SVHN",
        10,
        SVHN_LABELS,
        (3, 32, 32),
        73_257,
        "ufldl-stanford/svhn",
        recipe={"lr_per_128": 0.01, "attack_step_size": "1/255", "augment": False},
    ),
    "cifar100": Dataset("CIFAR-100", 100, CIFAR100_LABELS, (3, 32, 32), 50_000, "uoft-cs/cifar100"),
    "tiny_imagenet": Dataset(
        "Tiny ImageNet",
        200,
        None,
        (3, 64, 64),
        100_000,
        "zh-plus/tiny-imagenet",
        test_split="validation",
        torchvision=False,
    ),
}
# The paper's settings (Sec. 4.1, Tables 1-2, supplementary): every method on CIFAR-10 and SVHN, AT elsewhere.
PAPER_TAGS = tuple(f"{method}_{data}" for data in ("cifar10", "svhn") for method in ("at", "trades", "mart")) + (
    "at_cifar100",
    "at_tiny_imagenet",
)


def published() -> frozenset[str]:
    """The "<architecture>.<tag>" entries whose weights are on the Hub (only these get a weight source in timm)."""
    return frozenset(json.loads(PUBLISHED_FILE.read_text()))


@dataclass(frozen=True)
class PaperResult:
    """Accuracy (%) the paper reports for one architecture and tag after its 100-epoch recipe (None: not reported)."""

    natural: float
    pgd20: float
    autoattack: float | None


# ResNet-18: Table 1 (CIFAR-10 and SVHN) and Table 3 (AutoAttack, CIFAR-10); VGG16: Table 2. WRN-34-10, CIFAR-100
# and Tiny ImageNet are in the supplementary material, which is not public with the paper.
PAPER_RESULTS = {
    ("resnet18_plain", "at_cifar10"): PaperResult(85.02, 48.22, 44.11),
    ("resnet18_fsr", "at_cifar10"): PaperResult(81.46, 52.47, 46.41),
    ("resnet18_plain", "trades_cifar10"): PaperResult(86.31, 50.74, 46.81),
    ("resnet18_fsr", "trades_cifar10"): PaperResult(84.49, 52.27, 48.45),
    ("resnet18_plain", "mart_cifar10"): PaperResult(82.73, 50.88, 44.27),
    ("resnet18_fsr", "mart_cifar10"): PaperResult(83.28, 54.80, 46.55),
    ("resnet18_plain", "at_svhn"): PaperResult(91.21, 40.85, None),
    ("resnet18_fsr", "at_svhn"): PaperResult(91.28, 43.94, None),
    ("resnet18_plain", "trades_svhn"): PaperResult(90.99, 47.12, None),
    ("resnet18_fsr", "trades_svhn"): PaperResult(91.39, 51.49, None),
    ("resnet18_plain", "mart_svhn"): PaperResult(90.50, 43.61, None),
    ("resnet18_fsr", "mart_svhn"): PaperResult(89.87, 46.51, None),
    ("vgg16_plain", "at_cifar10"): PaperResult(80.56, 47.17, None),
    ("vgg16_fsr", "at_cifar10"): PaperResult(80.06, 49.82, None),
    ("vgg16_plain", "trades_cifar10"): PaperResult(82.44, 47.39, None),
    ("vgg16_fsr", "trades_cifar10"): PaperResult(80.78, 49.95, None),
    ("vgg16_plain", "mart_cifar10"): PaperResult(76.11, 51.06, None),
    ("vgg16_fsr", "mart_cifar10"): PaperResult(79.18, 52.69, None),
    ("vgg16_plain", "at_svhn"): PaperResult(89.59, 40.27, None),
    ("vgg16_fsr", "at_svhn"): PaperResult(91.44, 45.99, None),
    ("vgg16_plain", "trades_svhn"): PaperResult(90.48, 45.99, None),
    ("vgg16_fsr", "trades_svhn"): PaperResult(91.89, 54.56, None),
    ("vgg16_plain", "mart_svhn"): PaperResult(89.95, 42.89, None),
    ("vgg16_fsr", "mart_svhn"): PaperResult(90.60, 47.17, None),
}
PAPER_CITATION = """@inproceedings{kim2023fsr,
  title     = {Feature Separation and Recalibration for Adversarial Robustness},
  author    = {Kim, Woo Jae and Cho, Yoonki and Jung, Junsik and Yoon, Sung-Eui},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2023}
}"""
