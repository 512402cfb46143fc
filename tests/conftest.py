"""Shared fixtures: a small naturally trained FSR network (fitted once per session)."""
import pytest
import timm
import torch
import torch.nn.functional as F

from fsr_models.datasets import load_cifar10, load_dataset, to_float
from fsr_models.hub import save_folder


@pytest.fixture(scope="session")
def natural_model(tmp_path_factory):
    """A quarter-width ResNet-18-FSR trained without attacks on the shipped 1,000 CIFAR-10 training images
    (6 epochs): well above chance, not robust. Returns (model in eval mode, its saved folder)."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18_fsr", widths=[16, 32, 64, 128])
    images, labels, _ = load_dataset("cifar10", "train", "sample")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(6):
        for idx in torch.randperm(len(images)).split(50):
            optimizer.zero_grad()
            F.cross_entropy(model(to_float(images[idx])), labels[idx]).backward()
            optimizer.step()
    model.eval()
    folder = tmp_path_factory.mktemp("natural") / "model"
    save_folder(model, folder)
    return model, folder


@pytest.fixture(scope="session")
def test_batch():
    return load_cifar10("test", limit=64)
