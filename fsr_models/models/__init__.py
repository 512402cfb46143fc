"""The networks, registered with timm on import."""

from ._fsrnet import FSRNet
from .attached import FSRAttached, attach_fsr
from .resnet import CifarResNet
from .vgg import CifarVGG
from .wide_resnet import WideResNet
