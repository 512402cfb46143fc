"""The networks, registered with timm on import."""

from fsr_models.models._fsrnet import FSRNet
from fsr_models.models.attached import FSRAttached, attach_fsr
from fsr_models.models.resnet import CifarResNet
from fsr_models.models.vgg import CifarVGG
from fsr_models.models.wide_resnet import WideResNet
