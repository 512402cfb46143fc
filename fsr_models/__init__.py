"""fsr-zoo: adversarially robust classifiers with Feature Separation and Recalibration (FSR).

Importing the package registers the networks with timm (`resnet18_fsr`, `vgg16_fsr`, `wrn34_10_fsr` and the
`*_plain` baselines, `fsr_attached`, FSR in any timm CNN: `attach_fsr`, and `resnet18_cas`, `resnet18_cifs`,
`resnet18_fd`, the other defenses of the paper's Table 4) and the transformers classes with the Auto classes.

The layers, one folder each: `fsr` (FSR itself: the module, its losses, its health), `defenses` (CAS, CIFS and
Feature Denoising, the defenses FSR is compared with), `models` (the networks, registered with timm), `hf` (the
transformers classes and the code a Hub repository carries), `data` (the data sets), `training` (the library of
training/train.py), `evaluation` (attacks, the protocol, checks, reports), `hub` (the folder layout, weight files,
records, cards and Hub repositories) and `facts` (what the paper and the zoo fix).
The modules beside them are the commands: `python -m fsr_models.evaluate`, `export`, `visualize`, `app`, `tour`
(with `cli`, what they share).
"""

from fsr_models.defenses import CAS, CIFS, DefenseOutput, DenoisingBlock
from fsr_models.facts.networks import ARCHITECTURES, HF_ORG
from fsr_models.facts.paper import PAPER_TAGS
from fsr_models.fsr import FSRLoss, FSROutput, fsr_health, fsr_health_problems, highest_wrong_class
from fsr_models.fsr.fsr_core import FSR, FSR_OUTPUTS, FSRParts
from fsr_models.hf import FSRConfig, FSRForImageClassification
from fsr_models.models import CifarResNet, CifarVGG, FSRAttached, FSRNet, WideResNet, attach_fsr

__version__ = "0.1.0"
