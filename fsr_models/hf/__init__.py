"""transformers classes of the zoo, registered with AutoConfig, AutoModelForImageClassification and
AutoImageProcessor on import."""

import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, ViTImageProcessor

from .configuration_fsr import FSRConfig
from .image_processing_fsr import image_processor
from .modeling_fsr import FSRForImageClassification, FSRPreTrainedModel

AutoConfig.register(FSRConfig.model_type, FSRConfig, exist_ok=True)
AutoModelForImageClassification.register(FSRConfig, FSRForImageClassification, exist_ok=True)
# transformers takes a local folder whose config.json holds timm's pretrained_cfg for a timm checkpoint and looks
# for the image processor's type in config.json; this mapping sends it to the folder's preprocessor_config.json.
# Image processors come per backend (ViTImageProcessor: torchvision's, ViTImageProcessorPil: PIL's), and pipelines
# ask for torchvision's first: both are registered, so none falls back with a warning. Releases before that split
# have no ViTImageProcessorPil, and ViTImageProcessor is their one processor.
_pil_processor = getattr(transformers, "ViTImageProcessorPil", None)
AutoImageProcessor.register(
    FSRConfig,
    slow_image_processor_class=_pil_processor or ViTImageProcessor,
    fast_image_processor_class=ViTImageProcessor if _pil_processor else None,
    exist_ok=True,
)

__all__ = ["FSRConfig", "FSRForImageClassification", "FSRPreTrainedModel", "image_processor"]
