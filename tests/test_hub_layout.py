"""One folder layout (config.json + model.safetensors (or the shards transformers writes) +
preprocessor_config.json, fsr_heads.safetensors beside them) for every loader: timm, transformers, the Hub cache."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForImageClassification

from fsr_models import FSRLoss
from fsr_models.hf import FSRConfig, FSRForImageClassification
from fsr_models.hub.folders import FSR_HEADS_NAME, load_fsr_heads, load_model, save_folder
from fsr_models.hub.weight_files import CONFIG_NAME, IMAGE_PROCESSOR_NAME, INDEX_NAME, WEIGHTS_NAME, merge_shards


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.rand(4, 3, 32, 32)


def trained_like(name, **kwargs):
    """A network whose BN statistics and weights are not the init ones, so a round trip has something to lose."""
    torch.manual_seed(1)
    model = timm.create_model(name, **kwargs).train()
    with torch.no_grad():
        model(torch.rand(8, model.in_chans, 32, 32))  # moves BN running statistics
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model.eval()


def test_config_fields_defaults_and_validation():
    assert FSRConfig(backbone="wrn34_10").fsr_stages == [3]
    assert FSRConfig(backbone="vgg16", fsr_stages=[]).timm_architecture == "vgg16_plain"
    config = FSRConfig(num_labels=100)
    fields = config.to_dict()
    assert fields["architecture"] == "resnet18_fsr" and fields["num_classes"] == 100
    assert "num_classes" not in fields["model_args"]  # the timm 1.0.31 model_args trap
    with pytest.raises(ValueError, match=r"unknown FSRConfig field\(s\) \['fsr_taus'\]"):
        FSRConfig(fsr_taus=0.2)
    with pytest.raises(ValueError, match="backbone"):
        FSRConfig(backbone="resnet50")
    with pytest.raises(ValueError, match="fsr_output"):
        FSRConfig(fsr_output="f_plus")
    with pytest.raises(ValueError, match="disagrees with itself: architecture='vgg16_fsr'.*timm reads architecture"):
        FSRConfig.from_dict({**fields, "architecture": "vgg16_fsr"})
    with pytest.raises(ValueError, match="disagrees with itself: model_args"):  # a hand edit of one side only
        FSRConfig.from_dict({**fields, "fsr_tau": 0.5})
    assert FSRConfig.from_dict({**fields, "num_classes": 10}).num_labels == 100  # labels follow id2label
    assert FSRConfig(fsr_stages=(3, 4)).fsr_stages == [3, 4]
    for bad, message in [(dict(fsr_tau=0), "positive"), (dict(fsr_stages=[5]), "1..4"), (dict(num_labels=0), "label")]:
        with pytest.raises(ValueError, match=message):
            FSRConfig(**bad)


@pytest.mark.parametrize("name", ["resnet18_fsr", "vgg16_plain", "wrn34_10_fsr"])
def test_one_folder_gives_identical_logits_in_timm_and_transformers(tmp_path, images, name):
    model = trained_like(name)
    reference = model(images)
    save_folder(model, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(model.state_dict())  # timm's own keys, no wrapper prefix

    by_local_dir = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    by_overlay = timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "model.safetensors"))
    ).eval()
    by_auto = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert isinstance(by_auto, FSRForImageClassification)
    with torch.no_grad():
        assert torch.equal(by_local_dir(images), reference)
        assert torch.equal(by_overlay(images), reference)
        assert torch.equal(by_auto(images).logits, reference)
        assert torch.equal(load_model(tmp_path).eval()(images), reference)


def test_transformers_model_saves_what_timm_loads(tmp_path, images):
    torch.manual_seed(0)
    hf_model = FSRForImageClassification(FSRConfig(backbone="vgg16", num_labels=100)).eval()
    output = hf_model(images, labels=torch.tensor([0, 1, 2, 3]), output_hidden_states=True)
    assert output.logits.shape == (4, 100) and output.loss.ndim == 0
    assert output.hidden_states[0].shape == (4, 512, 1, 1)
    hf_model.save_pretrained(tmp_path)
    again = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    by_timm = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(again(images).logits, output.logits)
        assert torch.equal(by_timm(images), output.logits)
    assert AutoConfig.from_pretrained(tmp_path).id2label[99] == "LABEL_99"


def test_new_head_from_a_saved_folder(tmp_path, images):
    save_folder(trained_like("resnet18_fsr"), tmp_path)
    model = load_model(tmp_path, num_classes=100)
    assert model(images).shape == (4, 100)
    reference = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    torch.testing.assert_close(model.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)


def test_labels_and_ablation_settings_survive_the_round_trip(tmp_path, images):
    model = trained_like("resnet18_fsr.at_cifar100", fsr_recalibration=False, fsr_tau=0.5)
    save_folder(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["label_names"][:2] == ["apple", "aquarium_fish"] and config["num_classes"] == 100
    assert config["model_args"]["fsr_recalibration"] is False and config["pretrained_cfg"]["tag"] == "at_cifar100"
    loaded = load_model(tmp_path).eval()
    assert loaded.fsr4.recalibration_net is None and loaded.fsr4.tau == 0.5
    assert torch.equal(loaded(images), model(images))


def test_weights_load_only_from_safetensors(tmp_path):
    save_folder(timm.create_model("resnet18_fsr"), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(timm.create_model("resnet18_fsr").state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="no model.safetensors"):
        load_model(tmp_path)
    with pytest.raises(OSError, match="model.safetensors"):
        AutoModelForImageClassification.from_pretrained(tmp_path)


def test_corrupt_or_mismatched_weights_are_clear_errors(tmp_path):
    save_folder(timm.create_model("resnet18_fsr"), tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_model(tmp_path)

    save_folder(timm.create_model("resnet18_fsr", num_classes=100), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("id2label", "label2id", "label_names"):
        config.pop(key, None)
    config["num_classes"] = 10
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not fit"):
        load_model(tmp_path)


def test_transformers_fine_tuning_calls(tmp_path, images):
    model = trained_like("resnet18_fsr")
    save_folder(model, tmp_path / "folder")
    wider = AutoModelForImageClassification.from_pretrained(
        tmp_path / "folder", num_labels=100, ignore_mismatched_sizes=True
    )
    assert wider(images).logits.shape == (4, 100)
    assert torch.equal(wider.model.layer1[0].conv1.weight, model.layer1[0].conv1.weight)
    # What Trainer and Accelerate do: pass the wrapper's own (prefixed) state dict; timm must still load it.
    wider.save_pretrained(tmp_path / "trainer", state_dict=wider.state_dict())
    assert load_model(tmp_path / "trainer").fc.out_features == 100


def test_transformers_refuses_weights_of_another_architecture(tmp_path):
    save_folder(timm.create_model("resnet18_fsr"), tmp_path)
    save_file(timm.create_model("resnet18_plain").state_dict(), str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"weights do not fit resnet18_fsr as configured: missing \['model.fsr4"):
        AutoModelForImageClassification.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="missing"):
        load_model(tmp_path)


def test_build_settings_survive_the_round_trip(tmp_path, images):
    model = trained_like("resnet18_fsr", global_pool="max", drop_rate=0.2)
    save_folder(model, tmp_path / "max")
    assert torch.equal(load_model(tmp_path / "max").eval()(images), model(images))
    gray = trained_like("vgg16_plain", in_chans=1)
    save_folder(gray, tmp_path / "gray")
    assert torch.equal(load_model(tmp_path / "gray").eval()(images[:, :1]), gray(images[:, :1]))


def test_network_inside_transformers_keeps_the_saved_timm_cfg(tmp_path):
    save_folder(trained_like("wrn34_10_fsr.at_tiny_imagenet", widen_factor=1), tmp_path)
    hf_model = AutoModelForImageClassification.from_pretrained(tmp_path)
    data_cfg = timm.data.resolve_model_data_config(hf_model.model)
    assert tuple(data_cfg["input_size"]) == (3, 64, 64) and hf_model.model.pretrained_cfg["tag"] == "at_tiny_imagenet"


def test_sharded_folders_load_whole_and_merge_into_the_one_file_timm_reads(tmp_path, images):
    """transformers and load_model read every shard; timm's local-dir: reads one file of a folder, so a sharded
    folder is refused with the command that merges it (not loaded from its first shard, nor from the auxiliary heads
    that sort before the shards); after merge_shards every loader gives the same logits from one model.safetensors."""
    model = trained_like("resnet18_fsr", widths=[16, 32, 64, 128])
    save_folder(model, tmp_path, max_shard_size="200KB", fsr_loss=FSRLoss.for_model(model))
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / INDEX_NAME).is_file() and (tmp_path / FSR_HEADS_NAME).is_file()
    reference = model(images)
    with torch.no_grad():
        assert torch.equal(AutoModelForImageClassification.from_pretrained(tmp_path).eval()(images).logits, reference)
        assert torch.equal(load_model(tmp_path).eval()(images), reference)
        with pytest.raises(ValueError, match=f"python hub/merge_shards.py {tmp_path}"):
            timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
        lacking = Path(shutil.copytree(tmp_path, tmp_path.with_name(tmp_path.name + "-lacking")))
        (lacking / shards[1]).unlink()
        with pytest.raises(ValueError, match=f"{lacking / shards[1]} is missing: {INDEX_NAME} lists it"):
            load_model(lacking)  # not "not a valid safetensors file"

        assert merge_shards(tmp_path) == tmp_path / WEIGHTS_NAME
        assert all(p.stat().st_mode & 0o044 for p in tmp_path.iterdir())  # readable by others (safetensors: 0600)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [CONFIG_NAME, WEIGHTS_NAME, IMAGE_PROCESSOR_NAME, FSR_HEADS_NAME]
        )
        for loaded in (
            timm.create_model(f"local-dir:{tmp_path}", pretrained=True),
            load_model(tmp_path),
            AutoModelForImageClassification.from_pretrained(tmp_path),
        ):
            logits = loaded.eval()(images)
            assert torch.equal(getattr(logits, "logits", logits), reference)
    assert merge_shards(tmp_path) == tmp_path / WEIGHTS_NAME  # nothing left to merge: a no-op


def test_an_interrupted_merge_is_finished_by_running_it_again(tmp_path, images):
    """A merge killed after writing model.safetensors but before removing the shards leaves both (which loaders
    refuse as ambiguous); the next merge checks the two agree and removes the shards."""
    model = trained_like("resnet18_fsr", widths=[16, 32, 64, 128])
    save_folder(model, tmp_path / "sharded", max_shard_size="200KB")
    save_folder(model, tmp_path / "whole")
    shutil.copyfile(tmp_path / "whole" / WEIGHTS_NAME, tmp_path / "sharded" / WEIGHTS_NAME)
    with pytest.raises(ValueError, match="holds both"):
        load_model(tmp_path / "sharded")
    merge_shards(tmp_path / "sharded")
    assert not (tmp_path / "sharded" / INDEX_NAME).exists() and not list((tmp_path / "sharded").glob("model-*"))
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "sharded").eval()(images), model(images))

    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_folder(model, tmp_path / "other", max_shard_size="200KB")
    shutil.copyfile(tmp_path / "whole" / WEIGHTS_NAME, tmp_path / "other" / WEIGHTS_NAME)  # not these shards' weights
    with pytest.raises(ValueError, match="differs from the shards"):
        merge_shards(tmp_path / "other")
    assert (tmp_path / "other" / INDEX_NAME).is_file()  # nothing removed


def test_fsr_heads_round_trip_and_say_why_they_start_afresh(tmp_path):
    model = trained_like("resnet18_fsr", widths=[16, 32, 64, 128])
    heads = FSRLoss.for_model(model)
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(torch.randn_like(p))  # not the init values: a load must bring them back
    save_folder(model, tmp_path / "saved", fsr_loss=heads)

    fresh = FSRLoss.for_model(model)
    assert (
        load_fsr_heads(tmp_path / "saved", fresh) == f"loaded the trained FSR auxiliary heads of {tmp_path / 'saved'}"
    )
    assert fresh.state_dict().keys() == heads.state_dict().keys()
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in heads.state_dict().items())

    wider = FSRLoss.for_model(trained_like("resnet18_fsr", widths=[16, 32, 64, 128], num_classes=100))
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    message = load_fsr_heads(tmp_path / "saved", wider)
    assert "trained for 10 classes, not 100" in message and "start afresh" in message
    assert all(torch.equal(wider.state_dict()[k], v) for k, v in before.items())  # left as initialised

    with pytest.raises(ValueError, match=f"{tmp_path / 'saved' / FSR_HEADS_NAME} does not fit"):
        load_fsr_heads(tmp_path / "saved", FSRLoss.for_model(timm.create_model("resnet18_fsr")))  # 512 wide, not 128

    save_folder(model, tmp_path / "saved")  # the network alone: the old heads are not its heads any more
    assert not (tmp_path / "saved" / FSR_HEADS_NAME).exists()
    assert "has no fsr_heads.safetensors" in load_fsr_heads(tmp_path / "saved", fresh)


@pytest.mark.parametrize(
    "change, named",
    [
        ({"fsr_tau": "fast"}, "fsr_tau"),
        ({"backbone": "resnet50"}, "backbone"),
        ({"fsr_stagez": [4]}, "fsr_stagez"),
        ({"architecture": "resnet18_plain"}, "architecture"),
        ({"model_args": {"layers": [1, 1, 1, 1], "widths": [8, 16, 32, 64], "fsr_tau": 0.5}}, "model_args"),
        (None, "not valid JSON"),
    ],
    ids=["type", "backbone", "unknown field", "architecture", "model_args", "json"],
)
def test_every_loader_refuses_a_bad_config_in_one_line_naming_the_file(tmp_path, capsys, change, named):
    from fsr_models import evaluate

    save_folder(trained_like("resnet18_fsr", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64]), tmp_path)
    path = tmp_path / "config.json"
    path.write_text("{bad" if change is None else json.dumps({**json.loads(path.read_text()), **change}))
    capsys.readouterr()  # the progress bar of the save
    loaders = [lambda: load_model(tmp_path), lambda: timm.create_model(f"local-dir:{tmp_path}", pretrained=True)]
    for load in loaders[: 1 if change is None else 2]:  # timm parses the JSON itself, before any zoo code runs
        with pytest.raises(ValueError) as error:
            load()
        assert str(path) in str(error.value) and named in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(SystemExit) as exit_code:  # the evaluation command: one line, exit 2
        evaluate.main([str(tmp_path), "--data-dir", "sample", "--n", "2", "--attacks", "natural"])
    assert exit_code.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(path) in err


def test_load_model_returns_eval_mode_so_classifying_leaves_bn_statistics_alone(tmp_path):
    save_folder(timm.create_model("resnet18_fsr", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64]), tmp_path)
    loaded = load_model(tmp_path)
    assert not any(m.training for m in loaded.modules())  # as transformers' from_pretrained
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    with torch.no_grad():
        loaded(torch.rand(8, 3, 32, 32))
    assert all(torch.equal(before[k], v) for k, v in loaded.state_dict().items())  # BN's running statistics kept
    assert timm.create_model(f"local-dir:{tmp_path}", pretrained=True).training  # timm's own convention, unchanged


def test_reading_records_and_rendering_cards_does_not_import_the_trainer():
    """The cards read a run's config (fsr_models.training.config) without the trainer's loop, checkpoints and
    records: a fresh interpreter that imports the card module has none of them."""
    script = "import sys, fsr_models.hub.card; print(sorted(m for m in sys.modules if 'fsr_models.training' in m))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    # the config and the names of its methods (losses), not the loop, checkpoints and records
    imported = "['fsr_models.training', 'fsr_models.training.config', 'fsr_models.training.losses']"
    assert result.stdout.strip() == imported
