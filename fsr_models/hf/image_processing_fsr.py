"""The preprocessing of a zoo network as a transformers image processor, saved beside its weights.

The networks take RGB pixels in [0, 1] at their input size, without normalisation (mean 0, std 1 in timm's
pretrained_cfg). transformers' `ViTImageProcessor` does exactly that when configured from the pretrained_cfg: resize
to the input size, rescale by 1/255, and normalise only where the cfg asks for it (no zoo network does). The
configuration, and the classes that read it from config.json where transformers looks there, are those of the code a
Hub repository carries (`remote/image_processing_fsr.py`), so the two cannot differ.
"""

from transformers import ViTImageProcessor

from fsr_models.hf.configuration_fsr import FSRConfig
from fsr_models.hf.remote.image_processing_fsr import FSRImageProcessor, FSRImageProcessorPil, preprocessor_config

__all__ = ["FSRImageProcessor", "FSRImageProcessorPil", "image_processor", "preprocessor_config"]


def image_processor(config: FSRConfig) -> ViTImageProcessor:
    """The image processor that turns images into this network's `pixel_values` (its `preprocessor_config.json`)."""
    return ViTImageProcessor(**preprocessor_config(config.pretrained_cfg))
