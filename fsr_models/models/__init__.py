"""The networks, registered with timm on import."""
from ._common import HF_ORG, PAPER_TAGS, PUBLISHED, FSRNet
from .resnet import CifarResNet
from .vgg import CifarVGG
from .wide_resnet import WideResNet

# Registered architecture names, FSR and plain, by backbone.
ARCHITECTURES = {
    "resnet18": ("resnet18_fsr", "resnet18_plain"),
    "vgg16": ("vgg16_fsr", "vgg16_plain"),
    "wrn34_10": ("wrn34_10_fsr", "wrn34_10_plain"),
}
