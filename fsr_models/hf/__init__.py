"""transformers classes of the zoo, registered with AutoConfig, AutoModelForImageClassification and
AutoImageProcessor on import."""

from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, ViTImageProcessor

from .configuration_fsr import FSRConfig
from .image_processing_fsr import image_processor
from .modeling_fsr import FSRForImageClassification, FSRPreTrainedModel

AutoConfig.register(FSRConfig.model_type, FSRConfig, exist_ok=True)
AutoModelForImageClassification.register(FSRConfig, FSRForImageClassification, exist_ok=True)
# transformers takes a local folder whose config.json holds timm's pretrained_cfg for a timm checkpoint and looks
# for the image processor's type in config.json; this mapping sends it to the folder's preprocessor_config.json.
# (`slow_`: the one keyword every transformers 5.x release accepts for a ViTImageProcessor.)
AutoImageProcessor.register(FSRConfig, slow_image_processor_class=ViTImageProcessor, exist_ok=True)

__all__ = ["FSRConfig", "FSRForImageClassification", "FSRPreTrainedModel", "image_processor"]
