"""The preprocessing of a zoo network as a transformers image processor, saved beside its weights.

The networks take RGB pixels in [0, 1] at their input size, without normalisation (mean 0, std 1 in timm's
pretrained_cfg). transformers' `ViTImageProcessor` does exactly that when configured from the pretrained_cfg: resize
to the input size, rescale by 1/255, and normalise only where the cfg asks for it (no zoo network does).
"""

from transformers import ViTImageProcessor
from transformers.image_utils import PILImageResampling

from .configuration_fsr import FSRConfig

# timm's interpolation names -> PIL's resampling filters
RESAMPLING = {
    "nearest": PILImageResampling.NEAREST,
    "bilinear": PILImageResampling.BILINEAR,
    "bicubic": PILImageResampling.BICUBIC,
}


def image_processor(config: FSRConfig) -> ViTImageProcessor:
    """The image processor that turns images into this network's `pixel_values` (its `preprocessor_config.json`)."""
    cfg = config.pretrained_cfg
    _, height, width = cfg["input_size"]
    mean, std = list(cfg.get("mean", (0.0, 0.0, 0.0))), list(cfg.get("std", (1.0, 1.0, 1.0)))
    return ViTImageProcessor(
        do_resize=True,
        size={"height": height, "width": width},
        resample=RESAMPLING[cfg.get("interpolation", "bilinear")],
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=any(m != 0 for m in mean) or any(s != 1 for s in std),
        image_mean=mean,
        image_std=std,
    )
