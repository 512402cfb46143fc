"""Saving and loading the zoo's one folder layout: `config.json` (timm + transformers keys), `model.safetensors` (or
its shards with their index), `preprocessor_config.json` (the image processor of transformers' pipelines) and,
beside them for fine-tuning, `fsr_heads.safetensors` (the trained auxiliary heads of the FSR losses).

The same folder, or a Hub repository holding it, loads with
`timm.create_model('hf-hub:<id>')`, `timm.create_model('local-dir:<folder>', pretrained=True)`,
`transformers.AutoModelForImageClassification.from_pretrained('<folder or id>')`,
`transformers.pipeline('image-classification', model='<folder or id>')` and `load_model`, after `import fsr_models`.
Weights are read through safetensors only: nothing here unpickles a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from safetensors.torch import load_file

from fsr_models.facts.networks import HF_ORG
from fsr_models.fsr import FSRLoss
from fsr_models.hf import FSRConfig, FSRForImageClassification, image_processor
from fsr_models.hf.configuration_fsr import read_folder_config
from fsr_models.hub.weight_files import (
    CONFIG_NAME,
    FSR_HEADS_NAME,
    IMAGE_PROCESSOR_NAME,
    INDEX_NAME,
    WEIGHTS_NAME,
    check_safetensors,
    make_readable,
    read_weights,
    save_weights,
)
from fsr_models.models._build import CHECKOUT_FOLDERS, NoPublishedWeights

__all__ = [  # the loaders, and the names of the layout's files (fsr_models.hub.weight_files) with them
    "save_folder",
    "load_model",
    "load_any_model",
    "load_fsr_heads",
    "read_fsr_heads",
    "download_folder",
    "image_processor_config",
    "checkout_weights",
    "read_weights",
    "check_safetensors",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "INDEX_NAME",
    "IMAGE_PROCESSOR_NAME",
    "FSR_HEADS_NAME",
]


def checkout_weights() -> Path | None:
    """The folder of trained weights of an fsr-zoo checkout (hub/weights), where a command runs from one; else None.
    The default of the commands' --weights."""
    folder = Path(CHECKOUT_FOLDERS).parent
    return folder if folder.is_dir() else None


def save_folder(
    model: torch.nn.Module,
    folder: str | os.PathLike,
    max_shard_size: int | str = "5GB",
    fsr_loss: FSRLoss | None = None,
    **config_fields,
) -> Path:
    """Write a zoo network built by timm as `config.json` + `model.safetensors` + `preprocessor_config.json` into
    `folder`.

    Weights larger than `max_shard_size` (e.g. "16MB") are split into `model-0000i-of-0000n.safetensors` shards
    with an index, as transformers does; `config_fields` (e.g. lambda_sep) go into the config. The trained auxiliary
    heads of `fsr_loss`, when given, go into `fsr_heads.safetensors` beside them (`load_fsr_heads` reads them);
    without it, heads left in the folder by an earlier save are removed, since they belong to other weights.
    """
    hf_model = FSRForImageClassification.from_timm_model(model, **config_fields)
    hf_model.save_pretrained(folder, max_shard_size=max_shard_size)
    make_readable(*Path(folder).glob("model*.safetensors"))
    heads_path = Path(folder) / FSR_HEADS_NAME
    if fsr_loss is None:
        heads_path.unlink(missing_ok=True)
    else:
        save_weights({k: v.detach().cpu().contiguous() for k, v in fsr_loss.state_dict().items()}, heads_path)
    return Path(folder)


def image_processor_config(folder: str | os.PathLike) -> str:
    """The `preprocessor_config.json` that belongs to a zoo folder's `config.json`, as the text saving writes."""
    return image_processor(FSRConfig.from_pretrained(folder)).to_json_string()


def read_fsr_heads(path: str | os.PathLike, fsr_loss: FSRLoss) -> dict[str, torch.Tensor]:
    """The auxiliary heads saved in `path`, checked to fit the FSR positions and feature widths of `fsr_loss` (a
    ValueError naming the file otherwise); their number of classes, `heads["heads.0.weight"].shape[0]`, may differ."""
    check_safetensors(path)
    saved, own = load_file(str(path)), fsr_loss.state_dict()
    if set(saved) != set(own) or any(saved[k].shape[1:] != own[k].shape[1:] for k in own if k.endswith("weight")):
        raise ValueError(
            f"{path} does not fit this network's FSR positions: saved "
            f"{ {k: tuple(v.shape) for k, v in saved.items()} }, needed { {k: tuple(v.shape) for k, v in own.items()} }"
        )
    return saved


def load_fsr_heads(source: str | os.PathLike, fsr_loss: FSRLoss) -> str:
    """Load the auxiliary heads saved beside the zoo model `source` (a folder, `hf-hub:<id>[@revision]` or a
    registered tag with a Hub source) into `fsr_loss`, for fine-tuning. Returns one sentence saying what happened:
    loaded, or why the heads start afresh (none saved, or a different number of classes: a new head). Heads whose
    feature widths do not fit are a ValueError."""
    folder = _heads_folder(str(source))
    path = folder / FSR_HEADS_NAME if folder is not None else None
    if path is None or not path.is_file():
        return f"{source} has no {FSR_HEADS_NAME}: the FSR auxiliary heads start from their initialisation"
    saved = read_fsr_heads(path, fsr_loss)
    classes, wanted = saved["heads.0.weight"].shape[0], fsr_loss.heads[0].out_features
    if classes != wanted:
        return (
            f"{source}'s FSR auxiliary heads were trained for {classes} classes, not {wanted}: they start afresh, "
            "like the new classifier"
        )
    fsr_loss.load_state_dict(saved)
    return f"loaded the trained FSR auxiliary heads of {source}"


def _heads_folder(source: str) -> Path | None:
    """The folder that holds (or would hold) a zoo model's files: local, or downloaded from the Hub."""
    if source.startswith("hf-hub:"):
        repo_id, _, revision = source.removeprefix("hf-hub:").partition("@")
        return download_folder(repo_id, revision or None, weights=False, extra=[FSR_HEADS_NAME])
    if Path(source).is_dir():
        return Path(source)
    cfg = timm.models.get_pretrained_cfg(source)
    if cfg is not None and cfg.hf_hub_id:  # a registered tag: its repository, where uploaded and reachable
        try:
            return download_folder(cfg.hf_hub_id, None, weights=False, extra=[FSR_HEADS_NAME])
        except ValueError:
            return None
    return None


def download_folder(repo_id: str, revision: str | None = None, weights: bool = True, extra: list[str] = ()) -> Path:
    """A Hub repository's config and safetensors weights (and the `extra` files) in the local cache (downloaded
    once; with HF_HUB_OFFLINE=1 read from the cache). Nothing else is fetched, so nothing pickled is ever opened."""
    patterns = [CONFIG_NAME, *extra] + ([WEIGHTS_NAME, INDEX_NAME, "model-*-of-*.safetensors"] if weights else [])
    where = f"{repo_id}{f' at revision {revision}' if revision else ''}"
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:  # also private or gated ones without access
        raise ValueError(
            f"{where} was not found on {constants.ENDPOINT}: check the repository id (the zoo's are "
            f"{HF_ORG}/<architecture>.<tag>) and the revision (a branch, tag or commit of that repository); for a "
            "private or gated repository, set HF_TOKEN to a token that may read it"
        ) from e
    except LocalEntryNotFoundError as e:
        raise ValueError(
            f"{where} is not in the local cache and the Hub cannot be reached (HF_HUB_OFFLINE is set, "
            "or no network): load it once while online"
        ) from e


def load_model(source: str | os.PathLike, pretrained: bool = True, **kwargs) -> torch.nn.Module:
    """A zoo network from a local folder, an `hf-hub:<id>[@revision]`, or a registered name
    (`resnet18_fsr.at_cifar10`).

    `kwargs` go to `timm.create_model` (e.g. `num_classes=100` for a new head). A folder holds `config.json`
    and `model.safetensors` (or its shards); a Hub repository is downloaded as such a folder and checked the same way.
    The model comes in eval mode, ready to classify, as transformers' `from_pretrained` gives it (timm's
    `create_model` gives train mode): call `.train()` to train it.
    """
    if str(source).startswith("hf-hub:"):
        repo_id, _, revision = str(source).removeprefix("hf-hub:").partition("@")
        return load_model(download_folder(repo_id, revision or None, weights=pretrained), pretrained, **kwargs)
    path = Path(source)
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise ValueError(f"{path} has no {CONFIG_NAME}: a zoo folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
        config = read_folder_config(path)
        pretrained_cfg = {
            **config.get("pretrained_cfg", {}),
            "num_classes": config["num_classes"],
            "label_names": config.get("label_names"),
        }
        overlay = dict(state_dict=read_weights(path)) if pretrained else None
        model_args = {**config.get("model_args", {}), **kwargs}
        model = timm.create_model(
            config["architecture"],
            pretrained=pretrained,
            pretrained_cfg=pretrained_cfg,
            pretrained_cfg_overlay=overlay,
            **model_args,
        )
        return model.eval()
    if os.sep in str(source):
        raise ValueError(f"{source} is not a folder; give a folder, an 'hf-hub:<org>/<name>' id or a model name")
    return timm.create_model(str(source), pretrained=pretrained, **kwargs).eval()


def load_any_model(source: str) -> torch.nn.Module:
    """A model as a command line names it: a zoo model (tag, hf-hub id, folder or local-dir:<folder>, training run
    folder) or any timm model name. What a user may get wrong (a missing folder, an unknown or uncached name, a tag
    without published weights) is a ValueError that says so in the command's words."""
    path = Path(source.removeprefix("local-dir:"))
    if source.startswith("local-dir:") and not path.is_dir():
        raise ValueError(f"{source}: {path} is not a folder")
    if path.is_dir() and (path / "model").is_dir() and not (path / "config.json").exists():
        path = path / "model" if (path / "model" / "config.json").exists() else path / "best"
    if path.is_dir():
        return load_model(path)
    try:
        return load_model(source)  # pretrained: a model name without weights fails with a message that says so
    except LocalEntryNotFoundError as e:
        raise ValueError(
            f"{source}: its pretrained weights are not in the local cache and the Hub cannot be reached "
            "(no network, or HF_HUB_OFFLINE is set): load it once while online, or give a folder"
        ) from e
    except NoPublishedWeights as e:  # said as this command's user gives MODEL
        raise ValueError(
            f"{source} {e.reason}; or give MODEL as the folder of trained weights (a checkout of fsr-zoo holds them "
            f"in {CHECKOUT_FOLDERS})"
        ) from e
    except RuntimeError as e:  # timm: an unknown model name
        raise ValueError(
            f"{source}: {e} (MODEL is a registered tag, hf-hub:<id>, a zoo folder or local-dir:<folder>, "
            "a training run folder or a timm model name)"
        ) from e
