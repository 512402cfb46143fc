"""FSR attached to timm CNNs the zoo does not ship (`fsr_models.attach_fsr`), on three families at timm's test
widths: the timm interface and the backbone's weights kept, FSR where it was put and the losses of Eq. 3-5, an SGD
step, one folder that every loader reads with equal logits, training with train.py on real CIFAR-10 images at 32x32
(from the backbone's pretrained weights too), and the evaluation with its sanity checks."""

from __future__ import annotations

import copy
import json

import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoModelForImageClassification, pipeline

from fsr_models import FSRLoss, attach_fsr, evaluate
from fsr_models.evaluation.attacks import pgd
from fsr_models.fsr import highest_wrong_class
from fsr_models.hf import FSRConfig, FSRForImageClassification
from fsr_models.hub.folders import load_model, save_folder
from fsr_models.hub.repository import PublishError, export_repo
from fsr_models.training import TrainConfig
from fsr_models.training.loop import build_model

# ResNet, ConvNeXt and EfficientNet as timm builds them for its own tests: ImageNet-shaped, a few hundred thousand
# parameters. The index of their last feature_info stage, where FSR goes by default.
FAMILIES = {"test_resnet": 4, "test_convnext": 3, "test_efficientnet": 4}


def images(n: int = 4, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def attached(name: str, **kwargs):
    torch.manual_seed(0)
    return attach_fsr(timm.create_model(name, num_classes=10), **kwargs)


def raw_stage_output(model, x: torch.Tensor) -> torch.Tensor:
    """The output of the stage FSR follows, before FSR: what the FSR module receives."""
    seen = []
    handle = model.fsr_modules()[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("name", FAMILIES)
def test_attach_fsr_keeps_the_timm_interface_and_the_backbones_weights(name):
    torch.manual_seed(0)
    base = timm.create_model(name, num_classes=10)
    weights = {k: v.clone() for k, v in base.state_dict().items()}
    base_cfg = dict(base.pretrained_cfg)
    model = attach_fsr(base).eval()
    last = FAMILIES[name]

    assert model.fsr_stages == (last,)
    (fsr,) = model.fsr_modules()
    assert fsr.channels == base.feature_info[last]["num_chs"]
    state = model.state_dict()
    assert all(torch.equal(state[f"base.{k}"], v) for k, v in weights.items())  # untouched, under base.
    key = base.feature_info[last]["module"].replace(".", "_")
    assert set(state) == {f"base.{k}" for k in weights} | {f"fsr.{key}.{k}" for k in fsr.state_dict()}

    cfg = model.pretrained_cfg
    assert cfg["input_size"] == base_cfg["input_size"] and cfg["interpolation"] == base_cfg["interpolation"]
    assert cfg["mean"] == (0.0, 0.0, 0.0) and cfg["std"] == (1.0, 1.0, 1.0)  # it normalises inside
    assert cfg["classifier"] == f"base.{base_cfg['classifier']}"
    assert model.num_features == base.num_features and model.get_classifier() is base.get_classifier()

    x = images()
    mean = torch.tensor(base_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(base_cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        features = model.forward_features(x)
        assert torch.equal(features, base.forward_features((x - mean) / std))  # pixels in, normalised inside
        assert torch.equal(model(x), model.forward_head(features)) and model(x).shape == (4, 10)
        # FSR's output is the stage's feature: forward_intermediates gives FSR(raw stage output)
        (at_fsr,) = model.forward_intermediates(x, indices=[last], intermediates_only=True)
        torch.testing.assert_close(at_fsr, fsr(raw_stage_output(model, x)), rtol=0, atol=0)
    model.reset_classifier(3)
    assert model(x).shape == (4, 3) and model.num_classes == 3


@pytest.mark.parametrize("name", FAMILIES)
def test_fsr_losses_of_an_attached_network_are_eq_3_to_5(name):
    model = attached(name).eval()  # eval: the mask without Gumbel noise, so the parts can be recomputed
    loss = FSRLoss.for_model(model)
    x, y = images(), torch.tensor([0, 1, 2, 3])
    out = model(x, return_fsr=True)
    (parts,) = out.fsr_parts
    f = raw_stage_output(model, x)
    fsr = model.fsr_modules()[0]
    m = torch.sigmoid(fsr.separation_net(f) / fsr.tau)
    torch.testing.assert_close(parts.mask, m)
    torch.testing.assert_close(parts.f_pos + parts.f_neg, f)
    torch.testing.assert_close(parts.f_neg_recal, parts.f_neg + (1 - m) * fsr.recalibration_net(parts.f_neg))

    def head(feature):
        return loss.heads[0](feature.mean(dim=(2, 3)))

    wrong = highest_wrong_class(out.logits, y)
    sep = F.cross_entropy(head(parts.f_pos), y) + F.cross_entropy(head(parts.f_neg), wrong)  # Eq. 3
    rec = F.cross_entropy(head(parts.f_neg_recal), y)  # Eq. 4
    terms = loss.terms(out, y)
    torch.testing.assert_close(terms["sep"], sep)
    torch.testing.assert_close(terms["rec"], rec)
    torch.testing.assert_close(terms["fsr"], sep + rec)  # Eq. 5 with lambda_sep = lambda_rec = 1


@pytest.mark.parametrize("name", FAMILIES)
def test_one_sgd_step_lowers_the_loss_of_an_attached_network_on_its_batch(name):
    """AT + FSR's loss on one fixed adversarial batch, before and after one small SGD step on it (the same Gumbel
    noise both times): the step goes downhill."""
    model = attached(name)
    loss_fn = FSRLoss.for_model(model)
    x, y = images(8), torch.arange(8) % 10
    cfg = TrainConfig(attack_steps=3, random_start=False)
    x_adv = pgd(model.eval(), x, y, cfg.eps, cfg.attack_step_size, cfg.attack_steps, cfg.random_start)
    params = list(model.parameters()) + list(loss_fn.parameters())
    optimizer = torch.optim.SGD(params, lr=1e-3)

    def loss_on_batch():
        torch.manual_seed(1)  # the same mask noise
        out = model.train()(x_adv, return_fsr=True)
        return F.cross_entropy(out.logits, y) + loss_fn(out, y)

    before = loss_on_batch()
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss_on_batch()
    assert after < before, (after.item(), before.item())


@pytest.mark.parametrize("name", FAMILIES)
def test_an_attached_folder_loads_with_equal_logits_in_timm_transformers_the_pipeline_and_load_model(name, tmp_path):
    model = attached(name).eval()
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32), "label_names": list("abcdefghij")}
    save_folder(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "fsr_attached" and config["backbone"] == f"timm/{name}"
    assert config["fsr_stages"] == [FAMILIES[name]] and config["model_args"]["base_model"] == name

    x = images()
    with torch.no_grad():
        reference = model(x)
        by_timm = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
        by_transformers = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
        assert torch.equal(by_timm(x), reference)
        assert torch.equal(load_model(tmp_path)(x), reference)
        # transformers leaves the weights where safetensors mapped them (not 64-byte aligned), and CPU kernels then
        # sum in another order: the same logits up to float rounding
        torch.testing.assert_close(by_transformers(pixel_values=x).logits, reference, rtol=0, atol=1e-6)

    pixels = (x * 255).round().byte()
    pictures = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels]
    classify = pipeline("image-classification", model=str(tmp_path), device="cpu")
    with torch.no_grad():
        expected = model(pixels.float() / 255).argmax(1)
    assert [r[0]["label"] for r in classify(pictures, top_k=1)] == ["abcdefghij"[i] for i in expected]


def test_an_attached_config_alone_builds_the_network_fsr_after_the_last_stage():
    config = FSRConfig(backbone="timm/test_convnext", num_labels=7)
    assert config.timm_architecture == "fsr_attached" and tuple(config.pretrained_cfg["mean"]) == (0.0, 0.0, 0.0)
    model = FSRForImageClassification(config).model
    assert model.fsr_stages == (3,) and model.num_classes == 7
    assert model.normalize_mean == tuple(timm.create_model("test_convnext").pretrained_cfg["mean"])
    with pytest.raises(ValueError, match="or 'timm/<a timm model name>', got 'timm/no_such_net'"):
        FSRConfig(backbone="timm/no_such_net")
    # timm's ResNet-18 (ImageNet-shaped: a 7x7 stem) is not the zoo's CIFAR ResNet-18 (3x3)
    timm_resnet = FSRForImageClassification(FSRConfig(backbone="timm/resnet18", fsr_stages=[])).model
    assert timm_resnet.base.conv1.kernel_size == (7, 7) and timm_resnet.fsr_modules() == []
    assert FSRForImageClassification(FSRConfig(backbone="resnet18")).model.conv1.kernel_size == (3, 3)
    with pytest.raises(ValueError, match="takes \\[0, 1\\] pixels as they are"):
        FSRConfig(backbone="resnet18", normalize_mean=[0.5, 0.5, 0.5])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: timm.create_model("test_vit"),
            "gives \\(1, 101, 64\\), not a batch of 64 x H x W feature maps.*transformer",
        ),
        (lambda: torch.nn.Linear(3, 3), "not a model timm built"),
        (lambda: timm.create_model("test_resnet", features_only=True), "has no forward_features"),
    ],
    ids=["transformer", "not timm", "features only"],
)
def test_attach_fsr_refuses_a_network_that_cannot_take_it_in_one_line(build, message):
    with pytest.raises(ValueError, match=message) as error:
        attach_fsr(build())
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: torch.compile(timm.create_model("test_resnet")), "then compile the result"),
        (lambda: timm.create_model("resnet18_fsr"), "has FSR already"),
        (lambda: timm.create_model("test_mambaout"), "stage stages.3 gives \\(1, 5, 5, 64\\).*channels-last"),
    ],
    ids=["compiled", "zoo network", "channels-last stages"],
)
def test_attach_fsr_refuses_what_it_would_get_wrong_in_one_line(build, message):
    with pytest.raises(ValueError, match=message) as error:
        attach_fsr(build())
    assert "\n" not in str(error.value)


def test_attaching_twice_to_one_backbone_is_refused():
    """A second attach_fsr would hook the backbone again, through FSR modules the first network holds."""
    backbone = timm.create_model("test_resnet")
    attach_fsr(backbone)
    with pytest.raises(ValueError, match="has FSR already"):
        attach_fsr(backbone)


@pytest.mark.parametrize(
    "build",
    [
        lambda: attach_fsr(timm.create_model("test_resnet", num_classes=10, global_pool="catavgmax")),
        lambda: attach_fsr(timm.create_model("test_resnet", in_chans=1), normalize_mean=[0.5], normalize_std=[0.5]),
        lambda: attach_fsr(timm.create_model("test_resnet", dtype=torch.bfloat16)).float(),
    ],
    ids=["pooling", "one channel", "bfloat16"],
)
def test_what_a_backbone_was_built_with_survives_the_folder(build, tmp_path):
    torch.manual_seed(0)
    model = build().eval()
    save_folder(model, tmp_path)
    x = torch.rand(2, model.in_chans, 64, 64)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path)(x), model(x))
    assert load_model(tmp_path).pretrained_cfg["input_size"][0] == model.in_chans


def test_attach_fsr_names_the_stages_there_are_when_asked_for_one_that_is_not():
    with pytest.raises(ValueError) as error:
        attach_fsr(timm.create_model("test_resnet"), stages=[5])
    assert str(error.value) == (
        "fsr_stages [5] are not stages of test_resnet: give a list of feature_info indices (0-based, negative from "
        "the end); its stages: 0 act1 (32 ch, stride 2), 1 layer1 (32 ch, stride 4), 2 layer2 (48 ch, stride 8), 3 "
        "layer3 (192 ch, stride 16), 4 layer4 (96 ch, stride 32)"
    )
    for stages in ([1.5], "layer4", [True]):
        with pytest.raises(ValueError, match="are not stages of test_resnet"):
            attach_fsr(timm.create_model("test_resnet"), stages=stages)
    assert attach_fsr(timm.create_model("test_resnet"), stages=[-1, 2, 4]).fsr_stages == (2, 4)
    assert attach_fsr(timm.create_model("test_resnet"), stages=-2).fsr_stages == (3,)
    assert attach_fsr(timm.create_model("test_resnet"), stages=[]).fsr_modules() == []  # the baseline


def test_a_copy_of_an_attached_network_runs_its_own_fsr_modules():
    """deepcopy (the evaluation's w/o Rec ablation copies the model) carries the hooks over to the copy's modules."""
    model = attached("test_resnet").eval()
    ablation = copy.deepcopy(model)
    ablation.set_fsr_output("f_pos")
    x = images()
    with torch.no_grad():
        assert not torch.equal(ablation(x), model(x))
        model.set_fsr_output("f_pos")
        assert torch.equal(ablation(x), model(x))


@pytest.fixture(scope="module")
def attached_run(tmp_path_factory, train_script):
    """A short AT + FSR run of FSR attached to timm's test ResNet (ImageNet-shaped: stride-2 stem, max-pool) on the
    shipped real CIFAR-10 images at 32x32: 200 training images, one epoch of 4 steps, PGD-2."""
    out = tmp_path_factory.mktemp("attached") / "run"
    settings = ["model=test_resnet", "model_args={fsr_stages: [-1]}", "data_dir=sample", "train_limit=250"]
    settings += ["val_size=50", "test_size=20", "epochs=1", "batch_size=50", "attack_steps=2", "val_attack_steps=2"]
    settings += [f"output_dir={out}"]
    assert train_script.main(["--cpu", "--set", *settings]) == 0
    return out


def test_train_py_trains_fsr_attached_to_a_timm_cnn_into_one_folder(attached_run):
    folder = attached_run / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "fsr_attached" and config["backbone"] == "timm/test_resnet"
    assert config["fsr_stages"] == [4] and config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert config["pretrained_cfg"]["tag"] == "at_cifar10" and config["id2label"]["0"] == "airplane"
    assert config["pretrained_cfg"]["crop_pct"] == 1.0 and "test_input_size" not in config["pretrained_cfg"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["train_images"] == 200 and metrics["sgd_steps"] == 4
    assert (folder / "fsr_heads.safetensors").is_file()
    model = load_model(folder)
    assert model.fsr_stages == (4,) and model.base_model_name == "test_resnet"


def test_fine_tuning_from_an_attached_folder_keeps_its_weights_and_gives_a_new_head(attached_run):
    folder = attached_run / "model"
    trained = load_model(folder).state_dict()
    same = build_model(TrainConfig(init=str(folder)), 10, None).state_dict()
    assert all(torch.equal(same[k], v) for k, v in trained.items())
    five = build_model(TrainConfig(init=str(folder)), 5, None).state_dict()
    assert five["base.fc.weight"].shape[0] == 5
    assert all(torch.equal(five[k], v) for k, v in trained.items() if not k.startswith("base.fc."))


def test_the_evaluation_runs_its_attacks_and_sanity_checks_on_an_attached_folder(attached_run, tmp_path):
    attacks = ["natural", "pgd20", "mask_surrogate", "transfer_without_rec"]
    argv = [attached_run / "model", "--data-dir", "sample", "--n", "16", "--attacks", *attacks, "--sanity"]
    assert evaluate.main([str(a) for a in [*argv, "--out", tmp_path]]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    accuracy = report["accuracy"]
    assert set(attacks) <= set(accuracy) and report["images"] == 16
    assert list(report["fsr_health"]) == ["fsr.layer4"]
    assert len(report["sanity_checks"]) == 8 and report["verdict"].endswith("(8 checks)")
    # each adaptive attack keeps the per-image worst case with PGD-20: never above it
    assert accuracy["mask_surrogate"] <= accuracy["pgd20"] and accuracy["transfer_without_rec"] <= accuracy["pgd20"]


def test_training_starts_from_the_backbones_pretrained_weights(tmp_path):
    """base_pretrained as a file (a download made elsewhere; True downloads from timm's source): every backbone
    tensor but the classifier, which gets CIFAR-10's classes, is the pretrained one."""
    torch.manual_seed(3)
    pretrained = timm.create_model("test_efficientnet")  # ImageNet's 1000 classes
    save_file(pretrained.state_dict(), tmp_path / "weights.safetensors")
    model_args = {"base_pretrained": str(tmp_path / "weights.safetensors"), "drop_path_rate": 0.1}
    cfg = TrainConfig(model="test_efficientnet", model_args=model_args)
    model = build_model(cfg, 10, None)
    state = model.state_dict()
    classifier = {"classifier.weight", "classifier.bias"}
    assert all(torch.equal(state[f"base.{k}"], v) for k, v in pretrained.state_dict().items() if k not in classifier)
    assert state["base.classifier.weight"].shape == (10, pretrained.num_features)
    assert model.backbone_args == {"drop_path_rate": 0.1}  # where the weights came from is not part of the network
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)


def test_publishing_an_attached_folder_says_how_to_push_it_instead(attached_run, tmp_path):
    with pytest.raises(PublishError, match="push_to_hub"):
        export_repo(attached_run / "model", tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("model_args={in_chans:1}", "YAML needs a space after the colon"),
        ("model_args={base_pretrained: /no/such.safetensors}", "/no/such.safetensors is not a file"),
        ("model=test_vit", "model test_vit: test_vit: stage blocks.5 gives"),
    ],
    ids=["glued YAML", "missing weights", "transformer"],
)
def test_train_py_says_in_one_line_what_is_wrong_with_a_timm_backbone(train_script, capsys, setting, message):
    settings = ["model=test_resnet", "data_dir=sample", "train_limit=100", "val_size=10", "batch_size=10", setting]
    assert train_script.main(["--cpu", "--set", *settings]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_train_py_names_what_model_may_be_when_it_is_neither_zoo_nor_timm(train_script, capsys):
    assert (
        train_script.main(
            [
                "--cpu",
                "--set",
                "model=resnet18_fsrr",
                "data_dir=sample",
                "train_limit=100",
                "val_size=10",
                "batch_size=10",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "neither one of the zoo's networks" in err and "timm model name" in err
