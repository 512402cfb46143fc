"""Feature Separation and Recalibration (FSR), Kim et al., CVPR 2023, Sec. 3: the module that sits inside a network
(`fsr_core`, torch only: the Hub repositories carry it too), its training losses (`loss`) and the figures that say
whether it works (`health`)."""

from fsr_models.fsr.fsr_core import FSR, FSR_OUTPUTS, FSRParts
from fsr_models.fsr.health import R_CONTRIBUTION_MIN, fsr_health, fsr_health_problems
from fsr_models.fsr.loss import FSRLoss, FSROutput, highest_wrong_class

__all__ = [
    "FSR",
    "FSR_OUTPUTS",
    "FSRLoss",
    "FSROutput",
    "FSRParts",
    "R_CONTRIBUTION_MIN",
    "fsr_health",
    "fsr_health_problems",
    "highest_wrong_class",
]
