"""The paper's facts (Kim et al., CVPR 2023): its threat model and schedule, its settings and the results it reports."""

from __future__ import annotations

import math
from dataclasses import dataclass

# The paper's protocol (Sec. 4.1): L-inf eps 8/255 on [0, 1] pixels, 100 epochs.
PAPER_EPS = 8 / 255
PAPER_EPOCHS = 100


def is_paper_eps(eps: float) -> bool:
    """Whether `eps` is the paper's 8/255 (as a float written and read back may be)."""
    return math.isclose(eps, PAPER_EPS, abs_tol=1e-7)


# The paper's settings (Sec. 4.1, Tables 1-2, supplementary): every method on CIFAR-10 and SVHN, AT elsewhere.
PAPER_TAGS = tuple(f"{method}_{data}" for data in ("cifar10", "svhn") for method in ("at", "trades", "mart")) + (
    "at_cifar100",
    "at_tiny_imagenet",
)


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
# Table 4: FSR against the feature-level defenses, all ResNet-18 trained with AT on CIFAR-10; accuracy (%) under
# each attack of TABLE4_ATTACKS (the report's names).
TABLE4_ATTACKS = ("natural", "fgsm", "pgd20", "pgd100", "cw", "ensemble", "autoattack")
TABLE4 = {
    "resnet18_plain": (85.02, 56.21, 48.22, 46.37, 47.38, 45.51, 44.11),
    "resnet18_fd": (85.14, 56.81, 48.54, 46.70, 47.72, 45.82, 44.57),
    "resnet18_cas": (85.78, 55.57, 50.42, 49.91, 53.47, 46.46, 44.23),
    "resnet18_cifs": (79.87, 56.53, 49.80, 48.17, 49.89, 47.26, 43.94),
    "resnet18_fsr": (81.46, 58.07, 52.47, 51.02, 49.44, 48.34, 46.41),
}
PAPER_CITATION = """@inproceedings{kim2023fsr,
  title     = {Feature Separation and Recalibration for Adversarial Robustness},
  author    = {Kim, Woo Jae and Cho, Yoonki and Jung, Junsik and Yoon, Sung-Eui},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2023}
}"""
