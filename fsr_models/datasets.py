"""The paper's data sets as uint8 image tensors (N, 3, H, W) and int64 labels, held in memory.

- CIFAR-10 from arrays: a folder with `train.npz` / `test.npz` (x uint8 (N, 32, 32, 3), y uint8), the layout of
  the offline copy, or with its pieces `train-0.npz`, `train-1.npz`, ... (concatenated in index order); or, as data folder "sample", the first 1000 training and 512 test images of CIFAR-10, which
  ship with the package so that the quick-start runs with no data and no network.
- CIFAR-10, CIFAR-100 and SVHN through torchvision, downloaded into the folder where a network is available.
- Tiny ImageNet from its extracted `tiny-imagenet-200/` folder (there is no torchvision downloader).
A missing data set is a FileNotFoundError that says where to put it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .models._common import DATASETS

SAMPLES = {
    "train": Path(__file__).parent / "data" / "cifar10_train_first1000.npz",
    "test": Path(__file__).parent / "data" / "cifar10_test_first512.npz",
}
DATA_DIR_ENV = "FSR_DATA_DIR"


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float NCHW in [0, 1], the models' input."""
    return images.float().div_(255)


def _from_arrays(path: Path, limit: int | None):
    with np.load(path) as arrays:
        x, y = arrays["x"][:limit], arrays["y"][:limit]
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y.astype(np.int64))


def _torchvision(name: str, root: Path, split: str):
    import torchvision

    try:
        if name == "svhn":
            ds = torchvision.datasets.SVHN(root, split=split, download=True)
            return torch.from_numpy(ds.data), torch.from_numpy(ds.labels.astype(np.int64))
        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        ds = cls(root, train=split == "train", download=True)
    except (OSError, RuntimeError) as e:  # no network and nothing downloaded yet
        raise FileNotFoundError(
            f"{name} {split} is not in {root} and could not be downloaded ({e}). Download it elsewhere with "
            f"torchvision.datasets into that folder, or for CIFAR-10 put {split}.npz arrays there."
        ) from e
    return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets, dtype=torch.int64)


def _tiny_imagenet(root: Path, split: str):
    from PIL import Image

    base = root / "tiny-imagenet-200"
    if not (base / "wnids.txt").is_file():
        raise FileNotFoundError(
            f"Tiny ImageNet not found: expected {base}/wnids.txt. Extract tiny-imagenet-200.zip into {root}."
        )
    wnids = sorted((base / "wnids.txt").read_text().split())
    index = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        files = [(p, index[w]) for w in wnids for p in sorted((base / "train" / w / "images").glob("*.JPEG"))]
    else:  # the labelled validation set is the usual test set
        rows = [line.split("\t") for line in (base / "val" / "val_annotations.txt").read_text().splitlines() if line]
        files = [(base / "val" / "images" / r[0], index[r[1]]) for r in rows]
    x = np.stack([np.asarray(Image.open(p).convert("RGB")) for p, _ in files])
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.tensor([c for _, c in files]), wnids


def load_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None, limit: int | None = None):
    """(images uint8 (N, 3, H, W), labels int64 (N,), label names) of `split` ('train' or 'test').

    `data_dir` defaults to $FSR_DATA_DIR. CIFAR-10 arrays in it are used first; otherwise torchvision downloads.
    "sample" is the CIFAR-10 sample in the package; without any folder the CIFAR-10 test split uses it too.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    labels = DATASETS[name][1]
    if name == "cifar10" and (str(data_dir) == "sample" or (data_dir is None and split == "test")):
        return (*_from_arrays(SAMPLES[split], limit), labels)
    if data_dir is None or str(data_dir) == "sample":
        raise FileNotFoundError(
            f"no data folder for {name} {split}: set ${DATA_DIR_ENV} or --data-dir / data_dir to a folder that has "
            "it (CIFAR-10: train.npz / test.npz arrays; only a small CIFAR-10 'sample' ships with the package)"
        )
    root = Path(data_dir)
    if name == "cifar10" and (root / f"{split}.npz").is_file():
        return (*_from_arrays(root / f"{split}.npz", limit), labels)
    parts = sorted(root.glob(f"{split}-*.npz"), key=lambda p: int(p.stem.split("-")[1]))
    if name == "cifar10" and parts:  # pieces carried to the GPU machine (../shared/tools/gpu-data-chunks), in order
        x, y = map(torch.cat, zip(*(_from_arrays(p, None) for p in parts)))
        return x[:limit], y[:limit], labels
    if name == "tiny_imagenet":
        x, y, labels = _tiny_imagenet(root, split)
    else:
        x, y = _torchvision(name, root, split)
    return x[:limit], y[:limit], labels


def load_cifar10(split: str = "test", data_dir: str | os.PathLike | None = None, limit: int | None = None):
    """CIFAR-10 images as float NCHW in [0, 1] and labels, for quick use (the demo, tests, notebooks)."""
    x, y, _ = load_dataset("cifar10", split, data_dir, limit)
    return to_float(x), y
