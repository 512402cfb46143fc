"""The image processor of an fsr-zoo network, for loading it without the fsr-zoo package (see `configuration_fsr.py`).

The networks take RGB pixels in [0, 1] at their input size, without normalisation: transformers' ViT image processor
configured from timm's `pretrained_cfg` in config.json (resize to the input size, x / 255, normalise only where the
cfg asks for it, which no zoo network does). That configuration is the folder's `preprocessor_config.json`.

transformers (5.25 and later) reads the image processor of a *local* folder from config.json instead, whenever
config.json holds timm's `pretrained_cfg`, as every zoo folder's does; ViT's defaults (224 x 224, mean and std 0.5)
would then fill what config.json does not say. The classes here, which config.json's `auto_map` names and the fsr-zoo
package registers for its config, read the preprocessing from `pretrained_cfg` in that case and return
transformers' own processor, configured exactly as `preprocessor_config.json` is.
"""

import transformers
from transformers import ViTImageProcessor

# timm's interpolation names -> PIL's resampling filters, as preprocessor_config.json stores them
RESAMPLING = {"nearest": 0, "bilinear": 2, "bicubic": 3}


def preprocessor_config(pretrained_cfg: dict) -> dict:
    """The `preprocessor_config.json` fields of a network with timm's `pretrained_cfg` (input size, mean, std)."""
    _, height, width = pretrained_cfg["input_size"]
    mean = [float(m) for m in pretrained_cfg.get("mean", (0.0, 0.0, 0.0))]
    std = [float(s) for s in pretrained_cfg.get("std", (1.0, 1.0, 1.0))]
    return {
        "do_resize": True,
        "size": {"height": height, "width": width},
        "resample": RESAMPLING[pretrained_cfg.get("interpolation", "bilinear")],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": any(m != 0 for m in mean) or any(s != 1 for s in std),
        "image_mean": mean,
        "image_std": std,
    }


class _ReadsModelConfig:
    """`from_dict` that takes a folder's config.json as well as its preprocessor_config.json, and returns an
    instance of `processor_class`, transformers' own class, so that what is saved from it needs no code of ours."""

    processor_class: type

    @classmethod
    def from_dict(cls, image_processor_dict: dict, **kwargs):
        if "pretrained_cfg" in image_processor_dict:  # config.json, as transformers 5.25+ reads local folders
            image_processor_dict = preprocessor_config(image_processor_dict["pretrained_cfg"])
        return cls.processor_class.from_dict(image_processor_dict, **kwargs)


class FSRImageProcessor(_ReadsModelConfig, ViTImageProcessor):
    """The torchvision-backend processor (transformers 5.25+), or the only one of earlier releases."""

    processor_class = ViTImageProcessor


# Releases that split image processors by backend have a PIL one too; before the split, ViT's one class serves both.
_ViTImageProcessorPil = getattr(transformers, "ViTImageProcessorPil", ViTImageProcessor)


class FSRImageProcessorPil(_ReadsModelConfig, _ViTImageProcessorPil):
    """The PIL-backend processor."""

    processor_class = _ViTImageProcessorPil
