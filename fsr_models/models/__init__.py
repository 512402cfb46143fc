"""The networks, registered with timm on import."""

from ..facts import ARCHITECTURES, HF_ORG, PAPER_TAGS  # where they were before fsr_models.facts held them
from ._fsrnet import FSRNet
from .attached import FSRAttached, attach_fsr
from .resnet import CifarResNet
from .vgg import CifarVGG
from .wide_resnet import WideResNet
