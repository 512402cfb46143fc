"""The attacks designed against FSR (fsr_models.evaluation.adaptive) and their place in the evaluation, on the
committed small naturally trained ResNet-18-FSR (tests/data/)."""

import json

import pytest
import timm
import torch

from fsr_models import evaluate
from fsr_models.evaluation import adaptive, attacks, evaluate_attacks
from fsr_models.evaluation.protocol import ADAPTIVE
from fsr_models.hub.folders import load_model, save_folder

SMALL_EPS = 1 / 255  # small enough that PGD-20 leaves images of the natural network standing

AGAINST_FSR = [n for n in ADAPTIVE if n != "defense_masks"]  # the adaptive attacks that apply to FSR networks


def logits(model, x):
    with torch.no_grad():
        return model(x)


def test_the_surrogate_mask_keeps_the_forward_and_changes_only_the_gradient(natural_model, test_batch):
    model, _ = natural_model
    x, y = test_batch[0][:16], test_batch[1][:16]

    def input_gradient():
        x_in = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x_in), y), x_in)
        return grad

    reference, exact_gradient = logits(model, x), input_gradient()
    with adaptive.surrogate_mask(model, 10.0):
        assert torch.equal(logits(model, x), reference)
        assert not torch.allclose(input_gradient(), exact_gradient)
    assert "mask" not in vars(model.fsr4)  # the module's own mask again
    assert torch.equal(input_gradient(), exact_gradient)
    with pytest.raises(ValueError, match="no FSR module"):
        with adaptive.surrogate_mask(timm.create_model("resnet18_plain", widths=[8, 16, 32, 64]), 10.0):
            pass


def test_the_without_rec_ablation_passes_on_f_pos_and_leaves_the_model_alone(natural_model, test_batch):
    model, _ = natural_model
    x = test_batch[0][:8]
    ablation = adaptive.without_recalibration(model)
    assert ablation.fsr4.output == "f_pos" and model.fsr4.output == "f_tilde"
    with torch.no_grad():
        features = model.layer4(model.layer3(model.layer2(model.layer1(model.act1(model.bn1(model.conv1(x)))))))
        f_pos = model.fsr4.mask(model.fsr4.separation_net(features)) * features
        assert torch.allclose(ablation.forward_features(x), f_pos, atol=1e-6)


def test_worst_case_keeps_a_fooling_candidate_for_every_image_any_candidate_fools(natural_model, test_batch):
    model, _ = natural_model
    x, y = test_batch
    weak = attacks.pgd(model, x, y, SMALL_EPS, SMALL_EPS / 10, 2, random_start=False)
    strong = attacks.pgd(model, x, y, SMALL_EPS, SMALL_EPS / 4, 20, random_start=False)
    fooled = [logits(model, c).argmax(1) != y for c in (x, weak, strong)]
    chosen = adaptive.worst_case(model, x, y, [x, weak, strong])
    assert torch.equal(logits(model, chosen).argmax(1) != y, fooled[0] | fooled[1] | fooled[2])
    assert fooled[2].sum() > fooled[0].sum()  # the strong candidate is needed for some images


def test_feature_attack_moves_features_towards_another_class_within_eps(natural_model, test_batch):
    model, _ = natural_model
    x, y = test_batch
    feature_point, then_pgd = adaptive.feature_attack(model, x, y, 8 / 255, 0.8 / 255, 10, 5).values()
    for point in (feature_point, then_pgd):
        attacks.check_bounds(point, x, 8 / 255)
    with torch.no_grad():
        clean = model.forward_features(x).flatten(1)
        moved = model.forward_features(feature_point).flatten(1)
    # distance to the nearest other-class clean feature falls for most images
    other_class = y[:, None] != y[None, :]
    before = torch.cdist(clean, clean).masked_fill(~other_class, float("inf")).min(1).values
    after = torch.cdist(moved, clean).masked_fill(~other_class, float("inf")).min(1).values
    assert (after < before).float().mean() > 0.9


WITHOUT_APGD = [n for n in AGAINST_FSR if n != "mask_surrogate_apgd"]


def with_their_attacks(small_eps_result, apgd_surrogate_result):
    """Each of the two evaluations with the adaptive attacks it ran."""
    return ((small_eps_result, WITHOUT_APGD), (apgd_surrogate_result, ["mask_surrogate_apgd"]))


@pytest.fixture(scope="module")
def small_eps_result(natural_model, test_batch):
    """Every attack of the report but the APGD surrogate at a small eps on 32 images, with a fresh plain network as
    the twin (fewer images and the softened masks' candidates all find the same ones)."""
    model, _ = natural_model
    x, y = test_batch[0][:32], test_batch[1][:32]
    twin = timm.create_model("resnet18_plain", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64]).eval()
    names = ["natural", "pgd20", *WITHOUT_APGD]
    return evaluate_attacks(model, x, y, names, SMALL_EPS, batch_size=32, progress=False, twin=twin)


@pytest.fixture(scope="module")
def apgd_surrogate_result(natural_model, test_batch):
    """The APGD surrogate (8 APGD runs of 100 iterations through the softened masks) on 8 of those images."""
    names = ["natural", "pgd20", "mask_surrogate_apgd"]
    return evaluate_attacks(natural_model[0], *(t[:8] for t in test_batch), names, SMALL_EPS, progress=False)


def test_each_adaptive_attack_breaks_every_image_pgd20_breaks(small_eps_result, apgd_surrogate_result):
    assert 0 < small_eps_result["accuracy"]["pgd20"] < small_eps_result["accuracy"]["natural"]  # PGD-20 leaves some
    for result, names in with_their_attacks(small_eps_result, apgd_surrogate_result):
        flags, accuracy = result["flags"], result["accuracy"]
        for name in names:
            assert not (flags[name] & ~flags["pgd20"]).any(), name  # never correct where PGD-20 broke it
            assert accuracy[name] <= accuracy["pgd20"]
        assert accuracy["adaptive_ensemble"] == torch.stack(list(flags.values())).all(0).float().mean().item()
        assert accuracy["adaptive_ensemble"] <= min(v for k, v in accuracy.items() if k != "adaptive_ensemble")
        assert result["settings"]["adaptive_ensemble"]["over"][0] == "natural"


def test_the_surrogate_family_spans_temperatures_losses_and_apgd(small_eps_result, apgd_surrogate_result):
    settings = {**small_eps_result["settings"], **apgd_surrogate_result["settings"]}
    candidates = {**small_eps_result["candidates"], **apgd_surrogate_result["candidates"]}
    assert settings["mask_surrogate"]["temperature_factors"] == [2.0, 10.0, 100.0, 1000.0]
    assert settings["mask_surrogate"]["losses"] == ["cross-entropy", "C&W margin"]
    assert settings["mask_surrogate_apgd"]["attacks"] == ["apgd-ce", "apgd-dlr"]
    assert list(candidates["mask_surrogate"]) == [
        f"T={t}, {loss}" for t in (2, 10, 100, 1000) for loss in ("cross-entropy", "C&W margin")
    ]
    assert list(candidates["mask_surrogate_apgd"]) == [
        f"T={t}, {a}" for t in (2, 10, 100, 1000) for a in ("apgd-ce", "apgd-dlr")
    ]
    assert list(candidates["feature_space"]) == ["feature", "feature, then PGD on cross-entropy"]
    for result in (small_eps_result, apgd_surrogate_result):  # the worst case is at most each of its candidates
        for name, by_candidate in result["candidates"].items():
            assert all(result["accuracy"][name] <= a for a in by_candidate.values()), name
    # the gradient of a softer mask differs: the candidates do not all find the same images
    assert len(set(candidates["mask_surrogate"].values())) > 1


def test_the_report_counts_what_each_attack_finds_beyond_pgd20(small_eps_result, apgd_surrogate_result):
    for result, names in with_their_attacks(small_eps_result, apgd_surrogate_result):
        flags, found, accuracy = result["flags"], result["found_beyond_pgd20"], result["accuracy"]
        assert set(found) == set(names)
        for name in names:  # each keeps the worst case with PGD-20: what it finds is the drop below PGD-20
            assert found[name] == int((flags["pgd20"] & ~flags[name]).sum())
            assert found[name] == round(len(flags["pgd20"]) * (accuracy["pgd20"] - accuracy[name]))


def test_the_command_expands_adaptive_to_what_applies_and_names_the_twin(natural_model, tmp_path, capsys):
    _, folder = natural_model
    zoo = tmp_path / "zoo"
    fsr_folder = zoo / "resnet18_fsr.at_cifar10"
    plain = timm.create_model("resnet18_plain", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64])
    save_folder(load_model(folder), fsr_folder)
    save_folder(plain, zoo / "resnet18_plain.at_cifar10")
    argv = ["--data-dir", "sample", "--n", "4", "--attacks", "natural", "adaptive", "--out"]
    assert evaluate.main([str(fsr_folder), *argv, str(tmp_path / "fsr")]) == 0
    report = json.loads((tmp_path / "fsr" / "report.json").read_text())
    assert list(report["accuracy"]) == [
        "natural",
        "mask_surrogate",
        "mask_surrogate_apgd",
        "feature_space",
        "transfer_twin",
        "transfer_without_rec",
        "adaptive_ensemble",
    ]
    assert report["settings"]["transfer_twin"]["transfer_from"] == "resnet18_plain.at_cifar10"  # no path of here
    assert "| Adaptive ensemble |" in (tmp_path / "fsr" / "report.md").read_text()
    # a plain network has no mask: only the feature-space attack and the transfer from its FSR twin apply
    assert evaluate.main([str(zoo / "resnet18_plain.at_cifar10"), *argv, str(tmp_path / "plain")]) == 0
    report = json.loads((tmp_path / "plain" / "report.json").read_text())
    assert list(report["accuracy"]) == ["natural", "feature_space", "transfer_twin", "adaptive_ensemble"]
    # without a twin (no sibling folder of the zoo, no --twin), the transfer from it cannot run: stdout and report.md
    # say so, beside what does not apply to a network without FSR or CAS/CIFS masks
    save_folder(plain, tmp_path / "alone" / "resnet18_plain.at_cifar10")
    capsys.readouterr()
    assert evaluate.main([str(tmp_path / "alone" / "resnet18_plain.at_cifar10"), *argv, str(tmp_path / "alone")]) == 0
    assert (
        "not run: transfer_twin (no twin (the same network with or without FSR): give --twin)"
        in capsys.readouterr().out
    )
    report = json.loads((tmp_path / "alone" / "report.json").read_text())
    assert list(report["accuracy"]) == ["natural", "feature_space", "adaptive_ensemble"]
    assert list(report["not_run"]) == [
        "mask_surrogate",
        "transfer_twin",
        "defense_masks",
        "mask_surrogate_apgd",
        "transfer_without_rec",
    ]
    written = (tmp_path / "alone" / "report.md").read_text()
    assert "Not run: mask_surrogate (the model has no FSR mask" in written and "; transfer_twin (no twin" in written
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([str(folder), "--data-dir", "sample", "--n", "4", "--attacks", "transfer_twin"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: transfer_twin cannot run on CifarResNet: no twin")
