"""The weight files of the zoo's folder layout: their names, the check that a file is whole safetensors, reading a
folder's weights (one `model.safetensors`, or the shards and index that transformers writes for large models), and
merging shards into the one file the Hub repositories hold. Nothing here unpickles a file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
IMAGE_PROCESSOR_NAME = "preprocessor_config.json"
# The pickled checkpoints timm's `local-dir:` loader reads where a folder has no model.safetensors (save_for_hf's
# default writes the first), with torch's weights-only unpickler: tensors and plain containers, never code.
TIMM_PICKLED_NAMES = ("pytorch_model.bin", "pytorch_model.pth")
# The auxiliary heads h of `FSRLoss`, saved beside the network: only the FSR losses read them (fine-tuning), so
# timm and transformers loading never see them.
FSR_HEADS_NAME = "fsr_heads.safetensors"


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


def make_readable(*paths: str | os.PathLike) -> None:
    """Give files the mode any other file gets here (0644 under the usual umask): safetensors writes its files 0600,
    which other users of a shared folder, or a web server, cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    for path in paths:
        os.chmod(path, 0o666 & ~umask)


def save_weights(tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """A safetensors file of `tensors`, readable like the folder's other files."""
    save_file(tensors, str(path), metadata={"format": "pt"})
    make_readable(path)


def shard_files(folder: Path) -> list[str]:
    """The shard files that a folder's index lists, in order."""
    return sorted(set(json.loads((folder / INDEX_NAME).read_text())["weight_map"].values()))


def read_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a folder's `model.safetensors`, or of its shards listed in `model.safetensors.index.json`."""
    folder = Path(folder)
    index = folder / INDEX_NAME
    if index.is_file() and (folder / WEIGHTS_NAME).is_file():
        raise ValueError(
            f"{folder} holds both {WEIGHTS_NAME} and {INDEX_NAME} (shards), as an interrupted merge leaves them: "
            f"run `python hub/merge_shards.py {folder}` to finish it (it checks that the two agree)"
        )
    if index.is_file():
        files = shard_files(folder)
    elif (folder / WEIGHTS_NAME).is_file():
        files = [WEIGHTS_NAME]
    else:
        raise ValueError(f"{folder} has no {WEIGHTS_NAME} (nor {INDEX_NAME}); pickled checkpoints are not loaded")
    state_dict = {}
    for name in files:
        if not (folder / name).is_file():
            raise ValueError(f"{folder / name} is missing: {INDEX_NAME} lists it as a shard of the weights")
        check_safetensors(folder / name)
        state_dict.update(load_file(folder / name))
    return state_dict


def check_one_weights_file(folder: str | os.PathLike) -> None:
    """The check before timm's `local-dir:` loader, which reads one weights file of a folder: a ValueError naming
    the folder when it holds no whole `model.safetensors` (e.g. only shards, which `merge_shards` joins), unless it
    holds timm's own pickled checkpoint, which timm reads with torch's weights-only unpickler."""
    folder = Path(folder)
    if not (folder / WEIGHTS_NAME).is_file() and not any((folder / name).is_file() for name in TIMM_PICKLED_NAMES):
        sharded = (folder / INDEX_NAME).is_file()
        raise ValueError(
            f"{folder} has no {WEIGHTS_NAME}"
            + (
                f": its weights are in shards ({INDEX_NAME}), and timm reads one file. Merge them with "
                f"`python hub/merge_shards.py {folder}`, or load the folder with fsr_models.hub.folders.load_model or "
                "transformers"
                if sharded
                else f" (nor timm's {TIMM_PICKLED_NAMES[0]}): save the model into it first"
            )
        )
    if (folder / WEIGHTS_NAME).is_file():
        check_safetensors(folder / WEIGHTS_NAME)


def merge_shards(folder: str | os.PathLike) -> Path:
    """Join a folder's weight shards into one `model.safetensors`, as the Hub repositories hold them, and remove the
    shards and their index. The merged file is written beside them and read back equal before anything is removed,
    so an interruption never loses weights (running it again finishes the job). Returns the merged file."""
    folder = Path(folder)
    target, index = folder / WEIGHTS_NAME, folder / INDEX_NAME
    if not index.is_file():
        if target.is_file():
            return target  # one file already
        raise ValueError(f"{folder} holds no {INDEX_NAME}: there are no shards to merge")
    shards = shard_files(folder)
    merged = read_weights(folder) if not target.is_file() else None
    if merged is not None:
        partial = folder / f"{WEIGHTS_NAME}.partial"
        save_weights(merged, partial)
        os.replace(partial, target)
    # Read back (also a merged file left by an interrupted merge) and compare before the shards go.
    written, parts = load_file(target), {}
    for name in shards:
        parts.update(load_file(folder / name))
    if written.keys() != parts.keys() or not all(torch.equal(written[k], parts[k]) for k in parts):
        raise ValueError(f"{target} differs from the shards in {folder}: remove one of the two by hand")
    for name in shards:
        (folder / name).unlink()
    index.unlink()
    return target


def zoo_name(source: str) -> str:
    """A model as a report names it for readers elsewhere, never by a path of this machine: `<architecture>.<tag>`
    of the model a folder holds (read from its config.json; a training run's model/ too; `local-dir:` or not), a
    registered tag, timm name or `hf-hub:` id as it is, otherwise the folder's own name."""
    source = str(source)
    path = Path(source.removeprefix("local-dir:"))
    for folder in (path, path / "model"):
        if (folder / CONFIG_NAME).is_file():
            config = json.loads((folder / CONFIG_NAME).read_text())
            tag = (config.get("pretrained_cfg") or {}).get("tag")
            return f"{config.get('architecture')}.{tag}" if tag else config.get("architecture", path.name)
    return source if source.startswith("hf-hub:") or "/" not in source else path.name
