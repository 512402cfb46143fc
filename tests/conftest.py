"""What the tests share: where the data and the weights are, the small committed network that the attack tests use,
the training scripts as modules, and one reference training run that the trainer, card and study tests build on.

Nothing here asserts how well a network learned: the attack tests use weights committed under tests/data/ (made by
tests/make_natural_checkpoint.py), and the tests that train check what a run writes and computes, not its accuracy.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# No test reaches the real Hub: offline, and a port where nobody listens (set before huggingface_hub is imported; the
# tests that serve a local Hub give their clients its address, online).
os.environ |= {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
if "PYTEST_XDIST_WORKER" in os.environ:  # two workers on two cores: one thread each (set before torch starts)
    os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from fsr_models.data import SAMPLES, load_cifar10  # noqa: E402
from fsr_models.hub.folders import load_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "hub" / "weights"  # the committed zoo weights, one folder per <architecture>.<tag>
SHIPPED_FSR, SHIPPED_PLAIN = ZOO / "resnet18_fsr.at_cifar10", ZOO / "resnet18_plain.at_cifar10"
ZOO_FOLDERS = sorted(p.parent for p in ZOO.glob("*.*/metrics.json"))  # in the order hub/zoo_card.py reads them
# The full CIFAR-10 arrays: $FSR_DATA_DIR as the library reads it, else where a checkout has them beside it
CIFAR10 = Path(os.environ.get("FSR_DATA_DIR") or ROOT.parent / "shared" / "data" / "cifar10")
NATURAL_CHECKPOINT = ROOT / "tests" / "data" / "natural_resnet18_fsr"
TRAIN_CONFIG = ROOT / "training" / "configs" / "resnet18_fsr_at_cifar10.yaml"
# Tests of mechanics train a ResNet-18-FSR with one block per stage at an eighth of the width.
TINY_ARGS = "model_args={layers: [1, 1, 1, 1], widths: [8, 16, 32, 64]}"
SMALL_RESNET = dict(layers=[1, 1, 1, 1], widths=[8, 16, 32, 64])  # the same tiny ResNet-18, as timm arguments
needs_cifar10 = pytest.mark.skipif(not CIFAR10.is_dir(), reason=f"needs the CIFAR-10 arrays in {CIFAR10}")


# The equal-update construction: each image twice in a row, shuffling off, a plain network trained naturally, one
# SGD step per epoch: two processes each get the same 32 images of the global batch of 64 and one process gets them
# twice, so per-process BN statistics agree and the averaged gradient equals the single one.
EQUAL_UPDATE_SETTINGS = ["model=resnet18_plain", "method=natural", "augment=false", "shuffle=false", "val_size=2"]
EQUAL_UPDATE_SETTINGS += ["test_size=8", "batch_size=64", "warmup_epochs=0", "precision=fp32", "channels_last=false"]


def equal_update_data(folder: Path) -> Path:
    """`folder` holding the equal-update construction's data: the shipped sample's first images, each twice."""
    folder.mkdir()
    for split, n in (("train", 33), ("test", 8)):
        with np.load(SAMPLES[split]) as arrays:
            np.savez(folder / f"{split}.npz", x=np.repeat(arrays["x"][:n], 2, axis=0), y=np.repeat(arrays["y"][:n], 2))
    return folder


def pytest_report_header(config):
    """The releases the contracts ran against (make test takes the newest allowed, make test-oldest the oldest)."""
    import huggingface_hub
    import timm
    import torch
    import transformers

    versions = dict(torch=torch, timm=timm, transformers=transformers, huggingface_hub=huggingface_hub)
    return "releases: " + ", ".join(f"{name} {module.__version__}" for name, module in versions.items())


def load_script(path: str, name: str):
    """The script at `path` (from the checkout's root) as the module `name`, to call its main(argv) in this process."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def tiny_run_args(out: Path, *settings: str, data_dir: str | Path = "sample") -> list[str]:
    """train.py's arguments for a short TRADES + FSR run of the tiny network on the shipped CIFAR-10 sample: 250
    training images (5 steps of 50 per epoch) and 50 held out, 2 epochs, a warm-up of 1.5 epochs and an lr drop at
    75 % of the plan (after the last epoch: a 2-epoch run never reaches it), PGD-1 in training and validation,
    the paper's PGD-20 in the final test of 20 images. `settings` (key=value) are added or override these."""
    return [
        "--cpu",
        "--config",
        str(TRAIN_CONFIG),
        "--set",
        f"data_dir={data_dir}",
        TINY_ARGS,
        "method=trades",
        "train_limit=300",
        "val_size=50",
        "test_size=20",
        "epochs=2",
        "batch_size=50",
        "warmup_epochs=1.5",
        "lr_milestones=[0.75]",
        "attack_steps=1",
        "val_attack_steps=1",
        "log_every=1",
        f"output_dir={out}",
        *settings,
    ]


@pytest.fixture(autouse=True)
def same_random_state():
    """Every test starts from the same random state, whichever tests ran before it in its process: the suite's
    verdict does not depend on how pytest-xdist shares the tests out."""
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True)
def in_a_folder_of_its_own(tmp_path_factory, monkeypatch):
    """Every test runs in an empty folder of its own: what a user's commands leave in the checkout (eval/, runs/)
    cannot change a verdict, and what a command writes by default does not land in the checkout."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="session")
def train_script():
    return load_script("training/train.py", "train")


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, train_script) -> Path:
    """One finished run of `tiny_run_args`, in-process. Tests that change a run work on a copy."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert train_script.main(tiny_run_args(out)) == 0
    return out


@pytest.fixture(scope="session")
def natural_model():
    """The committed naturally trained tiny ResNet-18-FSR (well above chance, not robust), in eval mode, and its
    folder."""
    return load_model(NATURAL_CHECKPOINT).eval(), NATURAL_CHECKPOINT


@pytest.fixture(scope="session")
def test_batch():
    """The first 64 CIFAR-10 test images of the shipped sample, as [0, 1] floats, and their labels."""
    return load_cifar10("test", "sample", limit=64)


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    if not CIFAR10.is_dir():
        pytest.skip(f"needs the CIFAR-10 arrays in {CIFAR10}")
    return CIFAR10


def trained_looking(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with BN running statistics that are not the identity, so that loading them counts in what is compared."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()
