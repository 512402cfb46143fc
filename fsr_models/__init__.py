"""fsr-zoo: adversarially robust classifiers with Feature Separation and Recalibration (FSR).

Importing the package registers the networks with timm (`resnet18_fsr`, `vgg16_fsr`, `wrn34_10_fsr` and the
`*_plain` baselines, and `fsr_attached`, FSR in any timm CNN: `attach_fsr`) and the transformers classes with the
Auto classes.
"""

from .facts import ARCHITECTURES, HF_ORG, PAPER_TAGS, published
from .fsr import FSRLoss, FSROutput, fsr_health, fsr_health_problems, highest_wrong_class
from .fsr_core import FSR, FSR_OUTPUTS, FSRParts
from .hf import FSRConfig, FSRForImageClassification
from .models import CifarResNet, CifarVGG, FSRAttached, FSRNet, WideResNet, attach_fsr

PUBLISHED = published()  # the tags with weights on the Hub, as of import

__version__ = "0.1.0"
