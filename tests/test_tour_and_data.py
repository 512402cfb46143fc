"""The README's main job and the CIFAR-10 arrays it runs on."""

import re
import tempfile

import numpy as np
import pytest
import torch
from conftest import ZOO
from PIL import Image

from fsr_models import tour
from fsr_models.data import load_cifar10, load_dataset


def test_shipped_sample_is_the_start_of_the_real_test_set():
    x, y = load_cifar10("test")
    assert x.shape == (512, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # CIFAR-10's first test labels
    assert (x[0, :, 0, 0] * 255).round().tolist() == [158, 112, 49]


def test_data_dir_reads_the_full_arrays(cifar10_dir):
    x, y = load_cifar10("train", cifar10_dir, limit=10)
    assert x.shape == (10, 3, 32, 32) and y.tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]


def test_a_data_folder_under_the_home_directory_may_be_written_with_a_tilde(tmp_path, monkeypatch):
    (tmp_path / "cifar10").mkdir()
    np.savez(tmp_path / "cifar10" / "test.npz", x=np.zeros((3, 32, 32, 3), np.uint8), y=np.array([7, 8, 9], np.uint8))
    monkeypatch.setenv("HOME", str(tmp_path))
    x, y = load_cifar10("test", "~/cifar10")  # as data_dir=~/cifar10 arrives from a shell that does not expand it
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [7, 8, 9]


def test_missing_data_is_a_clear_error_and_nothing_is_created_or_downloaded_unasked(tmp_path, monkeypatch):
    monkeypatch.delenv("FSR_DATA_DIR", raising=False)
    with pytest.raises(
        FileNotFoundError,
        match=r"cifar10 train is not in .* was not asked to be downloaded: put "
        r"CIFAR-10's train.npz / test.npz arrays .* --download for python -m fsr_models.evaluate, --set "
        r"download=true for training/train.py",
    ):
        load_cifar10("train", tmp_path)
    with pytest.raises(FileNotFoundError, match=f"data folder {tmp_path / 'typo'} does not exist"):
        load_dataset("cifar100", "test", tmp_path / "typo")
    assert not any(tmp_path.iterdir())  # nothing created: neither the mistyped folder nor torchvision's
    with pytest.raises(FileNotFoundError, match=r"svhn test is not in .* could not be downloaded"):
        load_dataset("svhn", "test", tmp_path / "svhn", download=True)  # asked, but this machine has no network
    with pytest.raises(FileNotFoundError, match="no data folder: give a folder for cifar10 test .*FSR_DATA_DIR"):
        load_dataset("cifar10", "test")  # the library does not fall back to the shipped sample either
    with pytest.raises(FileNotFoundError, match="the shipped sample is CIFAR-10 only"):
        load_dataset("svhn", "test", "sample")
    with pytest.raises(FileNotFoundError, match="FSR_DATA_DIR"):
        load_cifar10("train")
    with pytest.raises(FileNotFoundError, match="tiny-imagenet-200/wnids.txt"):
        load_dataset("tiny_imagenet", "train", tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_cifar10("validation")
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("imagenet", "train", tmp_path)


def test_tiny_imagenet_folder_layout(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01"]
    (base).mkdir()
    (base / "wnids.txt").write_text("\n".join(wnids))
    for i, w in enumerate(wnids):
        (base / "train" / w / "images").mkdir(parents=True)
        Image.fromarray(np.full((64, 64, 3), 10 * i, np.uint8)).save(base / "train" / w / "images" / f"{w}_0.JPEG")
    (base / "val" / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(base / "val" / "images" / "val_0.JPEG")
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t64\t64\n")
    x, y, labels = load_dataset("tiny_imagenet", "train", tmp_path)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.uint8 and labels == ["n01", "n02"]
    assert y.tolist() == [0, 1] and x[1].max() == 0  # sorted wnids: n01 -> 0 holds the 10-valued image
    x, y, _ = load_dataset("tiny_imagenet", "test", tmp_path)
    assert x.shape == (1, 3, 64, 64) and y.tolist() == [1]


def test_tour_runs_offline_and_shows_identical_logits_across_loaders(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))  # where the tour's temporary folder goes
    (tmp_path / "scratch").mkdir()
    tour.main(["--images", "8", "--weights", str(ZOO)])
    out = capsys.readouterr().out
    assert "resnet18_fsr" in out and "wrn34_10_plain" in out
    assert not list((tmp_path / "scratch").iterdir())  # the example folder is gone with the run
    assert re.search(r"resnet18_plain\.at_cifar10 +top-1 \d+\.\d%", out)  # the trained weights of --weights
    assert "eval forward twice, identical logits: True" in out
    assert out.count("pretrained=True): True") == 1 and "from_pretrained" in out and out.rstrip().endswith("True")
    tour.main(["--images", "2", "--out", str(tmp_path / "kept")])  # --out keeps the example folder
    assert (tmp_path / "kept" / "model.safetensors").is_file()
    with pytest.raises(SystemExit):  # a --weights that is no folder: the usage line, not a traceback
        tour.main(["--weights", str(tmp_path / "nowhere")])
    assert f"--weights {tmp_path / 'nowhere'} is not a folder" in capsys.readouterr().err


def test_a_failed_download_does_not_advise_the_download_again(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading cifar-10-python.tar.gz: no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(FileNotFoundError) as asked:
        load_dataset("cifar10", "test", tmp_path, 4, download=True)
    message = str(asked.value)
    assert "could not be downloaded" in message and "no network" in message and "--download" not in message
    assert "train.npz / test.npz" in message and "check the network" in message
    with pytest.raises(FileNotFoundError) as not_asked:
        load_dataset("cifar10", "test", tmp_path, 4)
    assert "--download for python -m fsr_models.evaluate" in str(not_asked.value)
