"""Saving and loading the zoo's one folder layout: `config.json` (timm + transformers keys) and `model.safetensors`.

The same folder, or a Hub repository holding it, loads with
`timm.create_model('hf-hub:<id>')`, `timm.create_model('local-dir:<folder>', pretrained=True)`,
`timm.create_model('<arch>', pretrained=True, pretrained_cfg_overlay=dict(file='<folder>/model.safetensors'))` and
`transformers.AutoModelForImageClassification.from_pretrained('<folder or id>')`, after `import fsr_models`.
Weights are read through safetensors only: nothing here unpickles a file.
"""
from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError, safe_open

from .hf import FSRForImageClassification

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def save_folder(model: torch.nn.Module, folder: str | os.PathLike) -> Path:
    """Write a zoo network built by timm as `config.json` + `model.safetensors` into `folder`."""
    FSRForImageClassification.from_timm_model(model).save_pretrained(folder)
    return Path(folder)


def check_safetensors(path: str | os.PathLike) -> None:
    """Raise a ValueError naming `path` if it is not a readable safetensors file (truncated, corrupt, pickle)."""
    try:
        with safe_open(str(path), framework="pt"):
            pass  # opening checks the header and that the data section covers every tensor
    except (SafetensorError, OSError) as e:
        raise ValueError(
            f"{path} is not a valid safetensors file ({e}); it may be truncated or not safetensors at all. "
            "Download or save it again; pickled checkpoints (.bin, .pth) are not loaded."
        ) from e


def load_model(source: str | os.PathLike, pretrained: bool = True, **kwargs) -> torch.nn.Module:
    """A zoo network from a local folder, an `hf-hub:<id>`, or a registered name (`resnet18_fsr.at_cifar10`).

    `kwargs` go to `timm.create_model` (e.g. `num_classes=100` for a new head). A folder must hold
    `config.json` and `model.safetensors`.
    """
    path = Path(source)
    if path.is_dir():
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (path / name).is_file():
                raise ValueError(f"{path} has no {name}: a zoo folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
        check_safetensors(path / WEIGHTS_NAME)
        return timm.create_model(f"local-dir:{path}", pretrained=pretrained, **kwargs)
    if os.sep in str(source) and not str(source).startswith("hf-hub:"):
        raise ValueError(f"{source} is not a folder; give a folder, an 'hf-hub:<org>/<name>' id or a model name")
    return timm.create_model(str(source), pretrained=pretrained, **kwargs)
