"""The paper's data sets as uint8 image tensors (N, 3, H, W) and int64 labels, held in memory.

- CIFAR-10 from arrays: a folder with `train.npz` / `test.npz` (x uint8 (N, 32, 32, 3), y uint8), the layout of
  the offline copy, or with its pieces `train-0.npz`, `train-1.npz`, ... (concatenated in index order); or, as data
  folder "sample", the first 1000 training and 512 test images of CIFAR-10, which ship with the package so that the
  quick-start runs with no data and no network.
- CIFAR-10, CIFAR-100 and SVHN through torchvision, from its files in the folder; downloaded there only when asked
  (`download=True`).
- Tiny ImageNet from its extracted `tiny-imagenet-200/` folder (there is no torchvision downloader).
A missing folder or data set is a FileNotFoundError that says where to put it and how to get it; no folder is
created unless a download was asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from fsr_models.facts.datasets import DATASETS

SAMPLES = {
    "train": Path(__file__).parent / "cifar10_train_first1000.npz",
    "test": Path(__file__).parent / "cifar10_test_first512.npz",
}
SAMPLE_SIZES = {"train": 1000, "test": 512}
DATA_DIR_ENV = "FSR_DATA_DIR"


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float NCHW in [0, 1], the models' input."""
    return images.float().div_(255)


def _from_arrays(path: Path, limit: int | None):
    with np.load(path) as arrays:
        x, y = arrays["x"][:limit], arrays["y"][:limit]
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y.astype(np.int64))


def _how_to_get(name: str, root: Path, download_failed: bool = False) -> str:
    """Where a data set goes and how to get it there, for the errors that say it is missing (after a download that
    failed: not the download again)."""
    download = (
        f"check the network and try again, or put torchvision's files for {name} in {root} by hand"
        if download_failed
        else f"have torchvision download it into {root} (or a folder of your choice): --download for "
        "python -m fsr_models.evaluate, --set download=true for training/train.py"
    )
    if name == "cifar10":
        return f"put CIFAR-10's train.npz / test.npz arrays (x uint8 (N, 32, 32, 3), y uint8) in {root}, or {download}"
    if name == "tiny_imagenet":
        return f"extract tiny-imagenet-200.zip into {root} (there is no downloader)"
    return download


def _torchvision(name: str, root: Path, split: str, download: bool):
    import torchvision

    try:
        if name == "svhn":
            ds = torchvision.datasets.SVHN(root, split=split, download=download)
            return torch.from_numpy(ds.data), torch.from_numpy(ds.labels.astype(np.int64))
        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        ds = cls(root, train=split == "train", download=download)
    except (OSError, RuntimeError) as e:  # not there, and not downloaded (not asked, or no network)
        reason = f"could not be downloaded ({e})" if download else "was not asked to be downloaded"
        how = _how_to_get(name, root, download_failed=download)
        raise FileNotFoundError(f"{name} {split} is not in {root} and {reason}: {how}") from e
    return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets, dtype=torch.int64)


def _tiny_imagenet(root: Path, split: str):
    from PIL import Image

    base = root / "tiny-imagenet-200"
    if not (base / "wnids.txt").is_file():
        raise FileNotFoundError(f"Tiny ImageNet not found: no {base}/wnids.txt: {_how_to_get('tiny_imagenet', root)}")
    wnids = sorted((base / "wnids.txt").read_text().split())
    index = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        files = [(p, index[w]) for w in wnids for p in sorted((base / "train" / w / "images").glob("*.JPEG"))]
    else:  # the labelled validation set is the usual test set
        rows = [line.split("\t") for line in (base / "val" / "val_annotations.txt").read_text().splitlines() if line]
        files = [(base / "val" / "images" / r[0], index[r[1]]) for r in rows]
    x = np.stack([np.asarray(Image.open(p).convert("RGB")) for p, _ in files])
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.tensor([c for _, c in files]), wnids


def load_dataset(
    name: str, split: str, data_dir: str | os.PathLike | None = None, limit: int | None = None, download: bool = False
):
    """(images uint8 (N, 3, H, W), labels int64 (N,), label names) of `split` ('train' or 'test').

    `data_dir` defaults to $FSR_DATA_DIR; "sample" is the CIFAR-10 sample in the package, and there is no other
    fallback. CIFAR-10 arrays in the folder are used first, then torchvision's files; `download=True` lets torchvision
    download into the folder (creating it). Without it, nothing is created or downloaded.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None  # an empty $FSR_DATA_DIR is no folder
    labels = DATASETS[name].label_names
    if name == "cifar10" and str(data_dir) == "sample":
        return (*_from_arrays(SAMPLES[split], limit), labels)
    if data_dir is None or str(data_dir) == "sample":
        raise FileNotFoundError(
            f"{'the shipped sample is CIFAR-10 only' if data_dir else 'no data folder'}: give a folder for {name} "
            f"{split} (training/train.py: --set data_dir=DIR; python -m fsr_models.evaluate: --data-dir DIR; or "
            f"${DATA_DIR_ENV}); only a small CIFAR-10 sample ships with the "
            f"package, as the folder 'sample' ({SAMPLE_SIZES['train']} training and {SAMPLE_SIZES['test']} test images)"
        )
    root = Path(data_dir).expanduser()  # "~/data" quoted, or from a shell that leaves ~ after "=" alone
    if not root.is_dir() and not (download and DATASETS[name].torchvision):
        raise FileNotFoundError(f"data folder {root} does not exist: {_how_to_get(name, root)}")
    if name == "cifar10" and (root / f"{split}.npz").is_file():
        return (*_from_arrays(root / f"{split}.npz", limit), labels)
    parts = sorted(root.glob(f"{split}-*.npz"), key=lambda p: int(p.stem.split("-")[1]))
    if name == "cifar10" and parts:  # the arrays in pieces (train-0.npz, train-1.npz, ...), concatenated in order
        x, y = map(torch.cat, zip(*(_from_arrays(p, None) for p in parts)))
        return x[:limit], y[:limit], labels
    if name == "tiny_imagenet":
        x, y, labels = _tiny_imagenet(root, split)
    else:
        x, y = _torchvision(name, root, split, download)
    return x[:limit], y[:limit], labels


def data_source(data_dir: str | os.PathLike | None, split: str, dataset: str = "cifar10") -> str:
    """Which data `load_dataset` reads for `data_dir`, in words for reports that others read: the shipped sample, or
    a local folder (not its path, which says nothing on another machine)."""
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    images = f"{split.replace('train', 'training')} images"
    if str(data_dir) == "sample":
        return f"sample (shipped first {SAMPLE_SIZES[split]} CIFAR-10 {images})"
    return f"{DATASETS[dataset].name} {images} of a local data folder"


def load_cifar10(split: str = "test", data_dir: str | os.PathLike | None = None, limit: int | None = None):
    """CIFAR-10 images as float NCHW in [0, 1] and labels, for quick use (the tour, tests, notebooks): without a
    folder (argument or $FSR_DATA_DIR) the test split is the shipped sample."""
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or ("sample" if split == "test" else None)
    x, y, _ = load_dataset("cifar10", split, data_dir, limit)
    return to_float(x), y
