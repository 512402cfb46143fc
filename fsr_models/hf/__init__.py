"""transformers classes of the zoo, registered with AutoConfig and AutoModelForImageClassification on import."""
from transformers import AutoConfig, AutoModelForImageClassification

from .configuration_fsr import FSRConfig
from .modeling_fsr import FSRForImageClassification, FSRPreTrainedModel

AutoConfig.register(FSRConfig.model_type, FSRConfig, exist_ok=True)
AutoModelForImageClassification.register(FSRConfig, FSRForImageClassification, exist_ok=True)

__all__ = ["FSRConfig", "FSRForImageClassification", "FSRPreTrainedModel"]
