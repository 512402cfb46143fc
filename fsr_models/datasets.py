"""CIFAR-10 as arrays: a data directory in the layout of `train.npz` / `test.npz` (x uint8 NHWC, y uint8), or the
first 512 test images that ship with the package, so the demo runs on a machine with no data and no network."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

SAMPLE = Path(__file__).parent / "data" / "cifar10_test_first512.npz"
DATA_DIR_ENV = "FSR_DATA_DIR"


def load_cifar10(split: str = "test", data_dir: str | os.PathLike | None = None, limit: int | None = None):
    """Images as float NCHW in [0, 1] and labels as int64, from `<data_dir>/<split>.npz`.

    `data_dir` defaults to $FSR_DATA_DIR; with neither, the shipped 512-image test sample is used (test only).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    if data_dir is not None:
        path = Path(data_dir) / f"{split}.npz"
        if not path.is_file():
            raise FileNotFoundError(
                f"CIFAR-10 {split} arrays not found at {path}. Put {split}.npz there (arrays x: uint8 "
                f"(N, 32, 32, 3), y: uint8 (N,)), or set ${DATA_DIR_ENV} / --data-dir to the folder that has it."
            )
    elif split == "test":
        path = SAMPLE
    else:
        raise FileNotFoundError(
            f"no CIFAR-10 training data: set ${DATA_DIR_ENV} or --data-dir to a folder with train.npz "
            "(only a 512-image test sample ships with the package)"
        )
    with np.load(path) as arrays:
        x, y = arrays["x"][:limit], arrays["y"][:limit]
    images = torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255).contiguous()
    return images, torch.from_numpy(y.astype(np.int64))
