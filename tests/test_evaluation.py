"""The attacks and the evaluation command on the committed small naturally trained network (tests/data/)."""

import json
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import SHIPPED_FSR
from PIL import Image

import fsr_models.hub.folders
from fsr_models import evaluate, evaluation
from fsr_models.evaluation import attacks, checks
from fsr_models.evaluation.checks import fsr_active_check
from fsr_models.evaluation.plot import plot_curve
from fsr_models.fsr import fsr_health, fsr_health_problems

EPS = 8 / 255


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_natural_model_pgd_below_fgsm_below_clean_and_near_zero(natural_model, test_batch):
    model, _ = natural_model
    x, y = test_batch
    clean = accuracy(model, x, y)
    fgsm = accuracy(model, attacks.fgsm(model, x, y, EPS), y)
    pgd20 = accuracy(model, attacks.pgd(model, x, y, EPS, EPS / 10, 20, random_start=False), y)
    # The committed weights: 67% clean, FGSM 5%, PGD-20 0% on these 64 images (tests/make_natural_checkpoint.py
    # with seeds 0-4 gave 67-77%, 0-5% and 0%).
    assert clean > 0.25  # trained: well above chance
    assert pgd20 <= fgsm <= clean and pgd20 <= 0.1, (clean, fgsm, pgd20)


def test_nfgsm_is_one_signed_step_from_noise_of_twice_eps_with_no_projection(natural_model, test_batch):
    """N-FGSM as its authors' code forms it: x + U(-2 eps, 2 eps) clipped to [0, 1], one step of eps along the sign
    of the cross-entropy's gradient there, clipped to [0, 1] and not projected back to the eps-ball."""
    model, _ = natural_model
    x, y = test_batch
    torch.manual_seed(0)
    x_adv = attacks.nfgsm(model, x, y, EPS, EPS, noise=2.0)
    torch.manual_seed(0)
    noisy = (x + torch.empty_like(x).uniform_(-2 * EPS, 2 * EPS)).clamp(0, 1).requires_grad_(True)
    F.cross_entropy(model(noisy), y, reduction="sum").backward()
    assert torch.equal(x_adv, (noisy.detach() + EPS * noisy.grad.sign()).clamp(0, 1))
    distance = (x_adv - x).abs().amax()
    assert EPS * 1.5 < distance <= 3 * EPS + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
    assert accuracy(model, x_adv, y) < accuracy(model, x, y)
    # Without noise it is FGSM
    assert torch.equal(attacks.nfgsm(model, x, y, EPS, EPS, noise=0.0), attacks.fgsm(model, x, y, EPS))


def reference_pgd(model, x, y, eps, alpha, steps):
    """An independent PGD: .backward() on a leaf copy, then sign step and clipping written out."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv = x_adv.clone().detach().requires_grad_(True)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x_adv), y, reduction="sum").backward()
        x_adv = x_adv + alpha * x_adv.grad.sign()
        x_adv = torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)
    return x_adv.detach()


def test_pgd_agrees_with_an_independent_implementation_to_the_image(natural_model, test_batch):
    model, _ = natural_model
    x, y = test_batch
    model.zero_grad(set_to_none=True)
    ours = attacks.pgd(model, x, y, EPS, EPS / 10, 20, random_start=False)
    assert all(p.grad is None for p in model.parameters())  # input gradients only: nothing leaks into .grad
    theirs = reference_pgd(model, x, y, EPS, EPS / 10, 20)
    with torch.no_grad():
        assert torch.equal(model(ours).argmax(1) == y, model(theirs).argmax(1) == y)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_cw_and_restarts_and_bounds(natural_model, test_batch):
    model, _ = natural_model
    x, y = test_batch
    cw = attacks.pgd(model, x, y, EPS, EPS / 10, 30, random_start=False, loss_fn=attacks.cw_margin_loss(50))
    attacks.check_bounds(cw, x, EPS)
    assert accuracy(model, cw, y) <= 0.1  # the same few images as PGD-20 survive
    one = attacks.pgd_restarts(model, x, y, 2 / 255, 0.5 / 255, 5, restarts=1)
    many = attacks.pgd_restarts(model, x, y, 2 / 255, 0.5 / 255, 5, restarts=4)  # the same first run, then random
    attacks.check_bounds(many, x, 2 / 255)
    assert accuracy(model, many, y) <= accuracy(model, one, y)
    with pytest.raises(RuntimeError, match="out of bounds"):
        attacks.check_bounds(x + 2 * EPS, x, EPS)
    margin = attacks.cw_margin(torch.tensor([[3.0, 1.0, -100.0]]), torch.tensor([0]), kappa=50)
    capped = attacks.cw_margin(torch.tensor([[0.0, 100.0]]), torch.tensor([0]), kappa=50)  # wrong by 100 > kappa
    assert margin.item() == -2.0 and capped.item() == 50.0


def test_autoattack_is_the_reference_code_in_eval_mode_with_our_eps(natural_model, test_batch):
    model, _ = natural_model
    x, y = test_batch
    # Images that PGD-20 breaks: APGD-CE, AutoAttack's first attack, breaks them too and the rest is skipped, which
    # keeps this test short (an image that resists runs APGD-T, FAB-T and 5,000 Square queries on the CPU).
    x_pgd = attacks.pgd(model, x, y, EPS, EPS / 10, 20, False)
    with torch.no_grad():
        broken = (model(x).argmax(1) == y) & (model(x_pgd).argmax(1) != y)
    x, y = x[broken][:8], y[broken][:8]
    with pytest.raises(ValueError, match="eval mode"):
        attacks.autoattack(model.train(), x, y, EPS)
    model.eval()
    caller_tracer = sys.gettrace()  # coverage's when measured, else None

    def tracer(frame, event, arg):  # stands for a debugger's: AutoAttack must leave it in place
        return None

    sys.settrace(tracer)
    try:
        x_adv = attacks.autoattack(model, x, y, EPS, batch_size=8)
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(caller_tracer)
    attacks.check_bounds(x_adv, x, EPS)
    assert (x_adv - x).abs().max() > 0.5 * EPS  # it used our eps, not pyautoattack's 0.3 (which bounds would fail)
    assert accuracy(model, x_adv, y) == 0.0 and len(x) == 8
    # Through evaluate_attacks(), the CLI's path, and under the caller's tracer (coverage's, when measured)
    report = evaluation.evaluate_attacks(model, x, y, ["natural", "autoattack"], EPS, batch_size=8, progress=False)
    assert report["accuracy"] == {"natural": 1.0, "autoattack": 0.0}
    assert report["settings"]["autoattack"]["version"] == "standard"


def test_nattack_lowers_accuracy_of_a_natural_model_and_counts_queries(natural_model, test_batch):
    model, _ = natural_model
    x, y = test_batch
    keep = (model(x).argmax(1) == y)[:]
    x, y = x[keep][:6], y[keep][:6]
    torch.manual_seed(0)
    x_adv, queries = attacks.nattack(model, x, y, EPS, population=50, max_queries=2000)
    attacks.check_bounds(x_adv, x, EPS)
    assert accuracy(model, x_adv, y) <= 0.5  # from 100%
    assert ((queries > 0) & (queries <= 2000)).all()
    fooled = model(x_adv).argmax(1) != y
    assert (queries[~fooled] > 2000 - 51).all()  # the unbroken images spent the budget


def test_transfer_attacks_stay_in_bounds_and_hurt_their_source(natural_model, test_batch):
    model, _ = natural_model
    x, y = test_batch
    for attack in (attacks.ti_fgsm, attacks.di_fgsm):
        x_adv = attack(model, x, y, EPS)
        attacks.check_bounds(x_adv, x, EPS)
        assert accuracy(model, x_adv, y) < accuracy(model, x, y)


def test_evaluation_command_writes_the_paper_table_sanity_checks_and_features(natural_model, tmp_path, capsys):
    _, folder = natural_model
    code = evaluate.main(
        [
            str(folder),
            "--data-dir",
            "sample",
            "--n",
            "16",
            "--attacks",
            "natural",
            "fgsm",
            "pgd20",
            "pgd100",
            "cw",
            "ti_fgsm",
            "--source",
            str(folder),
            "--sanity",
            "--features",
            "--out",
            str(tmp_path),
        ]
    )
    report = json.loads((tmp_path / "report.json").read_text())
    acc = report["accuracy"]
    assert list(acc) == ["natural", "fgsm", "pgd20", "pgd100", "cw", "ti_fgsm", "ensemble"]
    assert acc["ensemble"] <= min(acc[n] for n in ("natural", "fgsm", "pgd20", "pgd100", "cw"))
    assert report["settings"]["pgd20"] == {
        "attack": "PGD",
        "steps": 20,
        "step_size": EPS / 10,
        "loss": "cross-entropy",
        "random_start": False,
        "restarts": 1,
        "eps": EPS,
        "norm": "Linf",
    }
    md = (tmp_path / "report.md").read_text()
    assert md.index("Natural") < md.index("FGSM") < md.index("PGD-20") < md.index("C&W") < md.index("Ensemble")
    checks = {c["check"]: c["passed"] for c in report["sanity_checks"]}
    assert (
        checks["accuracy is about 0 at eps 128/255"]
        and checks["eval mode is deterministic (two forwards, identical logits)"]
    )
    assert code == (0 if all(checks.values()) else 4)
    assert set(report["features"]) == {"f_pos", "f_neg", "f_neg_recal", "f_tilde"}
    assert all(0 <= v["knn5"] <= 1 for v in report["features"].values())
    metrics = report["model_index"][0]["results"][0]["metrics"]
    assert {m["name"] for m in metrics} >= {"PGD-20 accuracy", "Ensemble accuracy"}
    # The sanity sweep is the robustness curve; the FSR figures are in the report and the printed tables.
    assert report["curve"]["eps"][-1] == 128 / 255 and (tmp_path / "robustness_curve.png").is_file()
    assert set(report["fsr_health"]["fsr4"]) >= {"r_contribution", "s_live_1", "r_live_2", "mask_mean"}
    assert checks[evaluation.FSR_CHECK]  # trained naturally, every part of FSR still works
    out = capsys.readouterr().out
    assert "PGD-20" in out and "| fsr4 |" in out and "| f_neg_recal |" in out


def test_knn_votes_weighted_by_similarity():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    assert evaluation.knn_accuracy(torch.tensor([[1.0, 0.05]]), torch.tensor([0]), bank, labels, k=3) == 1.0
    assert evaluation.knn_accuracy(torch.tensor([[0.1, 1.0]]), torch.tensor([1]), bank, labels, k=3) == 1.0


def test_plain_timm_model_evaluates_too(test_batch):
    model = timm.create_model("resnet18_plain", widths=[8, 16, 32, 64]).eval()
    x, y = test_batch
    result = evaluation.evaluate_attacks(model, x[:8], y[:8], ["natural", "fgsm"], progress=False)
    assert set(result["accuracy"]) == {"natural", "fgsm", "ensemble"}


def test_evaluation_command_fails_early_on_models_it_cannot_evaluate(tmp_path, capsys):
    folder = tmp_path / "plain"
    fsr_models.hub.folders.save_folder(timm.create_model("resnet18_plain", widths=[8, 16, 32, 64]), folder)
    with pytest.raises(SystemExit) as exit_:
        evaluate.main([str(folder), "--data-dir", "sample", "--n", "4", "--features", "--out", str(tmp_path / "r")])
    assert exit_.value.code == 2 and "--features needs an FSR network" in capsys.readouterr().err
    fsr_models.hub.folders.save_folder(
        timm.create_model("resnet18_plain", widths=[8, 16, 32, 64], num_classes=100), folder
    )
    with pytest.raises(SystemExit) as exit_:
        evaluate.main([str(folder), "--data-dir", "sample", "--n", "4", "--out", str(tmp_path / "r")])
    assert exit_.value.code == 2 and f"{folder} has 100 classes, cifar10 has 10" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_curve_falls_with_eps_to_about_zero_and_is_plotted(natural_model, tmp_path):
    _, folder = natural_model
    code = evaluate.main(
        [str(folder), "--data-dir", "sample", "--n", "32", "--attacks", "natural", "--curve", "--out", str(tmp_path)]
    )
    report = json.loads((tmp_path / "report.json").read_text())
    curve = report["curve"]
    assert code == 0 and "sanity_checks" not in report  # the sweep alone
    assert curve["attack"] == "PGD-20, step eps/4, no random start" and curve["images"] == 32
    assert curve["eps"] == [e / 255 for e in (0, 2, 4, 8, 16, 32, 64, 128)]
    acc = curve["accuracy"]
    assert acc[0] == report["accuracy"]["natural"] > 0.25
    assert all(b <= a + 1 / 32 for a, b in zip(acc, acc[1:])) and acc[-1] <= 1 / 32, acc  # within one image
    with Image.open(tmp_path / "robustness_curve.png") as png:
        assert png.format == "PNG" and png.size == (768, 528)  # 6.4 x 4.4 inches at 120 dpi
        assert len(png.convert("RGB").getcolors(maxcolors=100_000)) > 10  # drawn, not blank
    # what is drawn: the curve's points, and the paper's eps marked
    axes = plot_curve(report, tmp_path / "again.png").axes[0]
    (curve_line,) = [line for line in axes.lines if line.get_marker() == "o"]
    assert list(curve_line.get_xdata()) == pytest.approx([e * 255 for e in curve["eps"]])
    assert list(curve_line.get_ydata()) == pytest.approx([100 * a for a in acc])
    assert any(list(line.get_xdata()) == pytest.approx([8, 8]) for line in axes.lines if line is not curve_line)
    assert "| eps (/255) | 0 | 2 | 4 | 8 | 16 | 32 | 64 | 128 |" in (tmp_path / "report.md").read_text()


def dead_recalibration(model):
    """Zero the Recalibration Net's second BN (weight 0, bias -1): its ReLU, hence R, outputs 0 for every image."""
    bn = model.fsr4.recalibration_net[4]
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.fill_(-1.0)
    return model


def test_sanity_fails_when_the_recalibration_net_is_dead(test_batch, tmp_path, capsys):
    torch.manual_seed(0)
    model = timm.create_model("resnet18_fsr", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64]).eval()
    fresh = fsr_active_check(fsr_health(model, test_batch[0][:8]))
    assert fresh == {"check": evaluation.FSR_CHECK, "passed": True, "detail": []}  # an untrained FSR is active
    fsr_models.hub.folders.save_folder(dead_recalibration(model), tmp_path / "model")
    code = evaluate.main(
        [
            str(tmp_path / "model"),
            "--data-dir",
            "sample",
            "--n",
            "4",
            "--attacks",
            "natural",
            "--sanity",
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    (check,) = [c for c in report["sanity_checks"] if c["check"] == evaluation.FSR_CHECK]
    assert code == 4 and not check["passed"] and report["fsr_health"]["fsr4"]["r_contribution"] == 0
    assert any("fsr4: the Recalibration Net is dead" in problem for problem in check["detail"])
    assert "Recalibration Net is dead" in capsys.readouterr().err


@pytest.mark.skipif(not SHIPPED_FSR.is_dir(), reason="no shipped ResNet-18 + FSR weights")
def test_shipped_fsr_weights_have_a_working_recalibration_net(test_batch):
    """What `--sanity` reports for hub/weights/resnet18_fsr.at_cifar10 (the whole command on the full network takes
    minutes): what R adds to f- is about as large as f-, with a minority of the units after its second ReLU live,
    which is no problem."""
    health = fsr_health(fsr_models.hub.folders.load_model(SHIPPED_FSR), test_batch[0][:16])
    assert fsr_active_check(health) == {"check": evaluation.FSR_CHECK, "passed": True, "detail": []}
    assert health["fsr4"]["r_contribution"] > 0.5 and 0 < health["fsr4"]["r_live_2"] < 0.5


def test_a_stage_is_a_problem_when_none_of_its_units_is_live_not_when_few_are():
    working = {"r_contribution": 0.98, "s_live_1": 1.0, "s_live_2": 1.0, "r_live_1": 1.0, "r_live_2": 0.11}
    health = {"fsr4": {**working, "mask_mean": 0.47, "mask_above_0.99": 0.18, "mask_below_0.01": 0.23}}
    assert fsr_health_problems(health) == []
    health["fsr4"]["r_live_2"] = 0.0
    (problem,) = fsr_health_problems(health)
    assert problem.startswith("fsr4: the Recalibration Net has no live units after ReLU 2")


class NoisyInput(torch.nn.Module):
    """A randomised defence: noise on the input in every forward, eval mode included."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x + 0.05 * torch.randn_like(x))


def test_autoattack_warning_flags_fail_the_check_on_their_symptom_and_the_verdict(natural_model, test_batch):
    model, _ = natural_model
    x, y = test_batch[0][:16], test_batch[1][:16]
    torch.manual_seed(0)
    clean = evaluation.evaluate_attacks(model, x, y, ["natural", "apgd_ce"], 1 / 255, progress=False)
    assert clean["autoattack_warnings"] == {"apgd_ce": []}
    assert clean["accuracy"]["apgd_ce"] < clean["accuracy"]["natural"]
    assert clean["settings"]["apgd_ce"]["attacks"] == ["apgd-ce"]
    passed = checks.with_autoattack_flags([], clean["autoattack_warnings"])
    assert passed == [{"check": checks.NO_AUTOATTACK_FLAG, "passed": True, "detail": None}]
    assert checks.verdict(passed) == "no check failed (1 check)"

    noisy = NoisyInput(model).eval()
    flagged = evaluation.evaluate_attacks(noisy, x, y, ["natural", "apgd_ce"], 1 / 255, progress=False)
    [flag] = flagged["autoattack_warnings"]["apgd_ce"]
    assert "randomized defense" in flag
    curve = {"eps": [0, 1], "accuracy": [0.7, 0.0]}
    ours = evaluation.sanity_checks(noisy, x, y, flagged, 1 / 255, curve=curve, health={})
    merged = checks.with_autoattack_flags(ours, flagged["autoattack_warnings"])
    determinism = [c for c in merged if c["check"] == checks.DETERMINISM]
    assert len(merged) == len(ours) and len(determinism) == 1  # folded into our check on randomness, not added
    assert determinism[0]["passed"] is False and determinism[0]["autoattack_flags"] == [f"apgd_ce: {flag}"]
    assert checks.verdict(merged).startswith("unreliable: ") and checks.DETERMINISM in checks.verdict(merged)


def test_autoattack_flags_without_a_matching_check_become_their_own():
    warnings = {"autoattack": ["Square Attack has decreased the robust accuracy of 1.5%.", "something new"]}
    merged = checks.with_autoattack_flags([{"check": "ours", "passed": True, "detail": None}], warnings)
    assert [(c["check"], c["passed"]) for c in merged] == [
        ("ours", True),
        ("black-box Square breaks no image that AutoAttack's white-box attacks left", False),
        ("AutoAttack raised no other warning", False),
    ]
    report = {"model": "m", "dataset": "cifar10", "indices": "0:2", "images": 2, "data_source": "s", "eps": EPS}
    report |= {
        "strong": False,
        "accuracy": {"natural": 1.0},
        "sanity_checks": merged,
        "verdict": checks.verdict(merged),
    }
    text = evaluation.markdown(report)
    assert "- FAIL: AutoAttack raised no other warning; AutoAttack flag: autoattack: something new" in text
    assert "Verdict: unreliable: black-box Square" in text


class RightWhenBrighter(torch.nn.Module):
    """Class 1 when the mean pixel exceeds 0.5, else class 0: an image at 0.49 is wrong clean and right brightened."""

    def forward(self, x):
        margin = x.mean(dim=(1, 2, 3)) - 0.5
        return torch.stack([-margin, margin], dim=1) * 100


def test_an_image_counts_as_robust_only_if_it_is_right_clean_too(monkeypatch):
    """Robust accuracy never exceeds natural accuracy: an attack that leaves the eps-ball's image classified right
    does not count an image the model gets wrong clean (as AutoAttack counts)."""
    x, y = torch.full((4, 3, 8, 8), 0.49), torch.ones(4, dtype=torch.long)
    brighter = lambda name, model, xb, yb, eps, *args, **kw: ((xb + eps).clamp(0, 1), {})  # noqa: E731
    monkeypatch.setattr(evaluation.protocol, "run_attack", brighter)
    model = RightWhenBrighter()
    assert accuracy(model, (x + EPS).clamp(0, 1), y) == 1.0  # the attack's images are right, the clean ones wrong
    result = evaluation.evaluate_attacks(model, x, y, ["natural", "fgsm"], progress=False)
    assert result["accuracy"] == {"natural": 0.0, "fgsm": 0.0, "ensemble": 0.0}
    monkeypatch.setattr(attacks, "pgd", lambda model, xb, yb, eps, *args, **kw: (xb + eps).clamp(0, 1))
    curve = evaluation.robustness_curve(model, x, y)
    assert curve["accuracy"] == [0.0] * len(curve["eps"])  # every eps: right under the attack only where right clean
