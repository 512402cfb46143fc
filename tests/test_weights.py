"""The weights committed under hub/weights/ load as their folder name says and reproduce their recorded results."""

import json
import statistics

import pytest
import timm
import torch
from conftest import ZOO_FOLDERS
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline

from fsr_models.data import load_dataset, to_float
from fsr_models.hub.folders import image_processor_config, load_model
from fsr_models.hub.records import read_record
from fsr_models.hub.weight_files import IMAGE_PROCESSOR_NAME, INDEX_NAME, WEIGHTS_NAME, check_safetensors

FOLDERS = ZOO_FOLDERS


def test_there_are_committed_weights():
    assert "resnet18_fsr.at_cifar10" in [p.name for p in FOLDERS]


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_folder_is_what_its_name_says_with_one_weights_file(folder):
    arch, tag = folder.name.split(".", 1)
    config = json.loads((folder / "config.json").read_text())
    assert (config["architecture"], config["pretrained_cfg"]["tag"]) == (arch, tag)
    assert [p.name for p in folder.glob("model*.safetensors")] == [WEIGHTS_NAME] and not (folder / INDEX_NAME).exists()
    check_safetensors(folder / WEIGHTS_NAME)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["test"]["images"] == 10000 and metrics["train_config"]["model"] == arch
    assert (folder / "README.md").is_file() and (folder / "train.log").is_file()
    assert (folder / IMAGE_PROCESSOR_NAME).read_text() == image_processor_config(folder)  # `python hub/zoo_card.py`


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_weights_load_the_same_in_timm_transformers_and_load_model(folder):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = load_model(folder).eval()(x)
        by_timm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        by_transformers = AutoModelForImageClassification.from_pretrained(folder).eval()
        assert torch.equal(by_timm(x), reference) and torch.equal(by_transformers(x).logits, reference)
    # every loader reads pool_size, the unpooled feature map at 32x32 (ResNet-18 4x4, VGG16 1x1), from config.json
    pool_size = {"resnet18": (4, 4), "vgg16": (1, 1)}[json.loads((folder / "config.json").read_text())["backbone"]]
    for model in (load_model(folder), by_timm, by_transformers.model):
        assert tuple(model.pretrained_cfg["pool_size"]) == pool_size


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_the_pipeline_names_the_classes_the_network_predicts(folder, cifar10_dir):
    images, _, names = load_dataset("cifar10", "test", cifar10_dir, 16)
    with torch.no_grad():
        predicted = load_model(folder).eval()(to_float(images)).argmax(1)
    classify = pipeline("image-classification", model=str(folder))
    pictures = [Image.fromarray(a) for a in images.permute(0, 2, 3, 1).numpy()]
    assert [result[0]["label"] for result in classify(pictures, top_k=1)] == [names[i] for i in predicted]


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_weights_reproduce_the_natural_accuracy_of_their_reports(folder, cifar10_dir):
    """Natural accuracy on the images of the largest AutoAttack report, else of the adaptive evaluation, to within 2
    images (a GPU's TF32 and bf16 against fp32 ties)."""
    record = read_record(folder)
    report = record.largest_with("autoattack") or record.adaptive
    model = load_model(folder).eval()
    images, labels, _ = load_dataset("cifar10", "test", cifar10_dir, report["images"])
    with torch.no_grad():
        hits = sum(
            (model(to_float(images[i : i + 250])).argmax(1) == labels[i : i + 250]).sum().item()
            for i in range(0, len(images), 250)
        )
    assert abs(hits - round(report["accuracy"]["natural"] * len(images))) <= 2
    strongest = "autoattack" if "autoattack" in report["accuracy"] else "adaptive_ensemble"
    assert report["accuracy"][strongest] < report["accuracy"]["natural"]


def log_epochs(folder) -> list[dict]:
    """The epoch lines of a run's train.log ("epoch 3 lr 0.1 ... seconds 14.2"), as dicts of their words."""
    lines = (folder / "train.log").read_text().splitlines()
    epochs = [dict(zip(w[::2], w[1::2])) for w in (line.split() for line in lines if line.startswith("epoch "))]
    return [e for e in epochs if "seconds" in e]


def test_the_readmes_account_of_each_run_is_its_records():
    """The hand-written part of each weights README (schedule, steps, best epoch, speed) says what the run's
    metrics.json and train.log hold."""
    for folder in FOLDERS:
        readme = " ".join((folder / "README.md").read_text().split())
        metrics = json.loads((folder / "metrics.json").read_text())
        epochs, steps, train = metrics["epochs"], metrics["sgd_steps"], metrics["train_config"]
        drops = [round(f * epochs) for f in train["lr_milestones"]]
        seconds = [float(e["seconds"]) for e in log_epochs(folder)]
        assert f"(epoch {metrics['best_epoch']})" in readme  # the best epoch, whose weights were saved
        if train["time_budget_min"]:  # a time budget, planned from the first epoch
            assert (
                f"the first epoch took {seconds[0]:.0f} s, so the {train['time_budget_min']:g}-minute budget " in readme
            )
            assert f"planned **{epochs} epochs** ({steps:,} SGD steps)" in readme
            assert f"x0.1 after epoch {drops[0]} and again after epoch {drops[1]}" in readme
        elif train.get("lr_schedule") == "cyclic":  # a fixed plan on the CPU, resumed across stretches of work
            assert f"**{epochs} epochs** ({steps:,} SGD steps), cyclic lr" in readme
            assert len(seconds) == epochs
            assert f"{statistics.median(seconds) / 60:.1f} minutes per epoch (median)" in readme
        else:  # a fixed plan on the GPU's compiled path
            schedule = f"**{epochs} of the paper's 100 epochs** ({steps:,} SGD steps), lr x0.1 after epochs {drops[0]}"
            assert f"{schedule} and {drops[1]}" in readme
            assert f"{statistics.median(seconds[1:]):.1f} s per epoch after compilation" in readme
            assert f"{seconds[0]:.1f} s for the first epoch" in readme
