"""transformers classes of the zoo, registered with AutoConfig, AutoModelForImageClassification and
AutoImageProcessor on import."""

import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

from fsr_models.hf.configuration_fsr import FSRConfig, read_folder_config
from fsr_models.hf.image_processing_fsr import FSRImageProcessor, FSRImageProcessorPil, image_processor
from fsr_models.hf.modeling_fsr import FSRForImageClassification, FSRPreTrainedModel
from fsr_models.models import _build

AutoConfig.register(FSRConfig.model_type, FSRConfig, exist_ok=True)
AutoModelForImageClassification.register(FSRConfig, FSRForImageClassification, exist_ok=True)
_build.FOLDER_CONFIG_CHECKS.append(read_folder_config)
# transformers reads the image processor of a local folder whose config.json holds timm's pretrained_cfg (every zoo
# folder's) from config.json, then asks the processor registered for the config's type: these classes turn that file
# into the processor preprocessor_config.json describes. Processors come per backend (torchvision's and PIL's) since
# transformers split them, and pipelines ask for torchvision's: both are registered, so none falls back with a
# warning. Releases before the split have one processor class, the "slow" one.
_split_by_backend = hasattr(transformers, "ViTImageProcessorPil")
AutoImageProcessor.register(
    FSRConfig,
    slow_image_processor_class=FSRImageProcessorPil,
    fast_image_processor_class=FSRImageProcessor if _split_by_backend else None,
    exist_ok=True,
)

__all__ = ["FSRConfig", "FSRForImageClassification", "FSRPreTrainedModel", "image_processor"]
