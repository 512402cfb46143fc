"""Model cards and MODEL_CARD.md say exactly what was trained and measured: their figures are read here from the
files they come from. Their wording is pinned once, by the generated documents being up to date (`hub/zoo_card.py
--check`, test_publish.py), not here."""

import csv
import dataclasses
import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import timm
import torch
from conftest import ROOT, SHIPPED_FSR, SHIPPED_PLAIN, ZOO, ZOO_FOLDERS, load_script
from huggingface_hub import ModelCard

from fsr_models import evaluate
from fsr_models.data import load_dataset, to_float
from fsr_models.evaluation.report import COLUMNS, joined
from fsr_models.fsr import fsr_health
from fsr_models.hf import FSRConfig
from fsr_models.hub.card import model_card
from fsr_models.hub.folders import FSR_HEADS_NAME, load_model
from fsr_models.hub.measured_text import RUN_ONLY_SETTINGS, TRAIN_DEFAULTS, comparison_lines
from fsr_models.hub.naming import default_repo_id, network_name, paper_repo_id
from fsr_models.hub.records import ADAPTIVE_NAME, CURVE_NAME, ROBUSTNESS_NAME, Record, read_record
from fsr_models.hub.repository import PublishError, check_repo_folder, export_repo
from fsr_models.training import TrainConfig, load_config

FSR, PLAIN = SHIPPED_FSR, SHIPPED_PLAIN


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def card_text(folder: Path) -> str:
    return ModelCard.load(folder / "README.md").text


def test_card_of_a_small_run_says_what_was_trained_and_measured(reference_run, tmp_path):
    """The reference run is not the paper's setting: a tiny network, TRADES on 250 of the shipped sample's training
    images (50 more held out) for 2 epochs with a warm-up, tested on 20 images, no AutoAttack."""
    metrics = json.loads((reference_run / "model" / "metrics.json").read_text())
    repo = export_repo(reference_run, tmp_path / "repo", zoo=ZOO)
    card = ModelCard.load(repo / "README.md")
    text = card.text
    config = json.loads((repo / "config.json").read_text())
    record = read_record(repo)
    # A run outside the paper's setting never takes the paper tag's repository name.
    assert card.data.model_name == default_repo_id(record) != paper_repo_id(config)
    assert card.data.model_name == "fsr-zoo/resnet18_fsr.trades_cifar10.layers1-1-1-1.widths8-16-32-64.train250"
    assert network_name(config) == "ResNet-18-like network (layers 1-1-1-1, widths 8-16-32-64)"
    assert f"A {network_name(config)} image classifier" in text
    run = record.run
    assert (run["train_images"], run["val_images"], run["sgd_steps"], run["available"], run["subset"]) == (
        250,
        50,
        10,
        1000,
        True,
    )
    assert "250 training images (of 1,000 in the shipped sample); 50 more held out" in text
    assert f"{metrics['epochs']} epochs (10 SGD steps of batch 50), a linear learning-rate warm-up over 1.5" in text
    test = metrics["test"]
    assert f"first {test['images']} CIFAR-10 test images" in text
    assert f"| {pct(test['accuracy']['natural'])} | {pct(test['accuracy']['pgd20'])} |" in text
    assert f"--data-dir sample --n {test['images']} --attacks natural pgd20`" in text
    assert "autoattack" not in (repo / "README.md").read_text().lower()  # it never ran: not in text nor metadata
    assert "Compared with" not in text  # the zoo's models are full-width runs: nothing to compare with
    assert FSR_HEADS_NAME in text and (repo / FSR_HEADS_NAME).is_file()
    assert check_repo_folder(repo) == sorted(p.name for p in repo.iterdir())


def test_card_shows_the_robustness_report_its_curve_and_fsr_health(reference_run, tmp_path):
    """robustness.json as `python -m fsr_models.evaluate <folder> --curve` writes it, beside the model."""
    folder = Path(shutil.copytree(reference_run / "model", tmp_path / "model"))
    assert (
        evaluate.main(
            [
                str(folder),
                "--data-dir",
                "sample",
                "--n",
                "8",
                "--attacks",
                "natural",
                "pgd20",
                "--curve",
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    shutil.copyfile(tmp_path / "eval" / "report.json", folder / ROBUSTNESS_NAME)
    shutil.copyfile(tmp_path / "eval" / CURVE_NAME, folder / CURVE_NAME)
    report = json.loads((folder / ROBUSTNESS_NAME).read_text())
    repo = export_repo(folder, tmp_path / "repo")
    assert (repo / ROBUSTNESS_NAME).is_file() and (repo / CURVE_NAME).read_bytes() == (folder / CURVE_NAME).read_bytes()
    text = card_text(repo)
    assert f"![Accuracy against eps]({CURVE_NAME})" in text
    curve = report["curve"]
    assert "| eps (/255) | " + " | ".join(f"{e * 255:g}" for e in curve["eps"]) + " |" in text
    assert "| accuracy | " + " | ".join(pct(a) for a in curve["accuracy"]) + " |" in text
    assert "--n 8 --attacks natural pgd20 --curve`" in text
    assert f"| {pct(report['accuracy']['natural'])} | {pct(report['accuracy']['pgd20'])} |" in text
    metadata = [
        (r.metric_name, r.metric_value, r.dataset_split) for r in ModelCard.load(repo / "README.md").data.eval_results
    ]
    assert ("PGD-20 accuracy", round(100 * report["accuracy"]["pgd20"], 2), "test[:8]") in metadata
    health = report["fsr_health"]["fsr4"]
    assert f"| fsr4 | {health['r_contribution']:.3g} |" in text and "Warning" not in text  # a fresh R is alive
    check_repo_folder(repo)
    readme = repo / "README.md"
    readme.write_text(readme.read_text().replace("![Accuracy against eps]", "![Our great robustness]"))
    with pytest.raises(PublishError, match="not the card generated"):
        check_repo_folder(repo)


def test_card_says_plainly_what_the_attacks_designed_against_fsr_found(reference_run, tmp_path):
    """robustness_adaptive.json as `python -m fsr_models.evaluate <folder> --attacks ... adaptive` writes it."""
    folder = Path(shutil.copytree(reference_run / "model", tmp_path / "model"))
    argv = [str(folder), "--data-dir", "sample", "--n", "8", "--attacks", "natural", "pgd20", "adaptive"]
    assert evaluate.main([*argv, "--out", str(tmp_path / "eval")]) == 0
    shutil.copyfile(tmp_path / "eval" / "report.json", folder / ADAPTIVE_NAME)
    accuracy = json.loads((folder / ADAPTIVE_NAME).read_text())["accuracy"]
    repo = export_repo(folder, tmp_path / "repo")
    text = card_text(repo)
    designed = ("mask_surrogate", "mask_surrogate_apgd", "feature_space", "transfer_without_rec")
    assert f"--n 8 --attacks natural pgd20 {' '.join(designed)}`" in text
    assert (
        "| Mask surrogate | Mask surrogate APGD | Feature space | Transfer from w/o Rec | Adaptive ensemble |" in text
    )
    strongest = min(accuracy[a] for a in designed)
    finding = "find more than PGD-20" if strongest < accuracy["pgd20"] - 0.005 else "find no more than PGD-20"
    assert f"The adaptive attacks {finding}" in text.replace("**", "")
    assert "Mask surrogate: PGD-20 on cross-entropy and on the C&W margin whose gradients go through FSR's mask" in text
    found = json.loads((folder / ADAPTIVE_NAME).read_text())["found_beyond_pgd20"]
    assert f"Mask surrogate APGD {found['mask_surrogate_apgd']}, Feature space {found['feature_space']}" in text
    assert "| Mask surrogate APGD | T=1000, apgd-dlr |" in text  # each candidate of each attack
    assert "--sanity` did not run with it" in text  # the card says which checks did not run
    metadata = {r.metric_name: r.metric_value for r in ModelCard.load(repo / "README.md").data.eval_results}
    assert metadata["Adaptive ensemble accuracy"] == round(100 * accuracy["adaptive_ensemble"], 2)
    assert check_repo_folder(repo)


def shipped_test(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())["test"]["accuracy"]


def shipped_autoattack(folder: Path) -> tuple[float, int]:
    """A shipped model's AutoAttack accuracy and its images: its robustness.json's, or, for the run written earlier,
    metrics.json's."""
    report = json.loads((folder / "robustness.json").read_text())
    if "autoattack" not in report["accuracy"]:
        report = json.loads((folder / "metrics.json").read_text())["evaluation"]
    return report["accuracy"]["autoattack"], report["images"]


def half_95(*accuracies_and_images: tuple[float, int]) -> float:
    """The half-width (in points) of the 95% interval of one accuracy, or of the difference of two, by the normal
    approximation."""
    return 196 * sum(p * (1 - p) / n for p, n in accuracies_and_images) ** 0.5


DIFFERENT_RECIPES = "they were trained with different recipes, so this comparison does not say whether FSR helps"


def recipes_differ(this: Path, other: Path) -> bool:
    """Whether two shipped models' recorded training differs in more than where and how the run was kept."""
    configs = []
    for folder in (this, other):
        metrics = json.loads((folder / "metrics.json").read_text())
        configs.append({**TRAIN_DEFAULTS, **metrics["train_config"], "epochs": metrics["epochs"]})
    keys = (set(configs[0]) | set(configs[1])) - RUN_ONLY_SETTINGS
    return any(configs[0].get(k) != configs[1].get(k) for k in keys)


@pytest.mark.parametrize("this, other", [(FSR, PLAIN), (PLAIN, FSR)], ids=["fsr", "plain"])
def test_card_of_each_shipped_model_reads_true_and_compares_with_its_counterpart(tmp_path, this, other):
    repo = export_repo(this, tmp_path / "repo", zoo=ZOO)
    text = card_text(repo)
    metrics, other_metrics = (json.loads((f / "metrics.json").read_text()) for f in (this, other))
    assert ModelCard.load(repo / "README.md").data.model_name == f"fsr-zoo/{this.name}"  # the paper's setting
    train = metrics["train_config"]
    train_images = 50_000 - train["val_size"]  # all of CIFAR-10's training images, less the validation ones
    assert f"- Data: {train_images:,} training images; {train['val_size']:,} more held out" in text
    steps = metrics["epochs"] * (train_images // train["batch_size"])
    assert f"{metrics['epochs']} epochs ({steps:,} SGD steps of batch {train['batch_size']}), no warm-up" in text
    test, other_test = shipped_test(this), shipped_test(other)
    assert f"| {pct(test['natural'])} | {pct(test['pgd20'])} |" in text
    (aa, aa_images), (other_aa, _) = shipped_autoattack(this), shipped_autoattack(other)
    images = {"Natural": metrics["test"]["images"], "PGD-20": metrics["test"]["images"], "AutoAttack": aa_images}
    rows = [
        f"| {f.name} | {m['epochs']} | "
        + " | ".join(f"{pct(v)} ± {half_95((v, n)):.2f}" for v, n in zip(values, images.values()))
        + " |"
        for f, m, values in (
            (this, metrics, (test["natural"], test["pgd20"], aa)),
            (other, other_metrics, (other_test["natural"], other_test["pgd20"], other_aa)),
        )
    ]
    assert all(row in text for row in rows)
    comparison = json.loads((repo / "comparison.json").read_text())
    assert comparison["model"] == other.name and comparison["metrics"] == other_metrics
    assert comparison.get("robustness") == read_record(other).robustness
    assert comparison.get("adaptive") == read_record(other).adaptive
    # who is ahead on each measure, whatever the pair's figures are
    measures = {"Natural": (test["natural"], other_test["natural"]), "PGD-20": (test["pgd20"], other_test["pgd20"])}
    measures["AutoAttack"] = (aa, other_aa)
    adaptive = [read_record(f).adaptive for f in (this, other)]  # each one's worst case over its adaptive attacks
    measures["Adaptive ensemble"] = tuple(r["accuracy"]["adaptive_ensemble"] for r in adaptive)
    images["Adaptive ensemble"] = adaptive[0]["images"]
    beyond = []
    for title, (mine, theirs) in measures.items():
        gap = round(100 * (mine - theirs), 2)
        leader = this if gap > 0 else other
        half = half_95((mine, images[title]), (theirs, images[title]))
        beyond += [title] if abs(gap) > half else []
        if gap:
            lead = rf"{title} \(\+{abs(gap):.2f} ± {half:.2f} points\)"
            assert re.search(rf"`{re.escape(leader.name)}` is ahead on [^;]*{lead}", text)
    said = " ".join(text.split())
    if beyond:
        assert f"Beyond the 95% interval of the difference: {joined(beyond)}." in said
    else:
        assert "Every difference is within its 95% interval." in said
    assert (DIFFERENT_RECIPES in text) == recipes_differ(this, other)
    assert ("### FSR health" in text) == (this == FSR)
    assert ("](figure1.png)" in text) == (this == FSR) == (repo / "figure1.png").is_file()  # the paper's Figure 1
    check_repo_folder(repo)


def test_dead_recalibration_net_is_a_plain_warning_in_the_cards(tmp_path):
    """fsr_health measured on 64 test images of the shipped sample with the shipped FSR weights whose R is killed
    (its second BN: weight 0, bias -1, so every unit after its ReLU is 0), as a run's metrics.json would record it:
    the card then says that R is dead; with the shipped weights as they are, it warns of nothing."""
    images, _, _ = load_dataset("cifar10", "test", "sample", 64)
    model = load_model(FSR)
    record = read_record(FSR)
    record.robustness = record.adaptive = None  # the figures of metrics.json, not those of later reports
    text = model_card(record, "fsr-zoo/resnet18_fsr.at_cifar10").text
    assert "part of FSR is dead" not in text and "## FSR health" in text
    r_bn = model.fsr4.recalibration_net[4]
    torch.nn.init.zeros_(r_bn.weight)
    torch.nn.init.constant_(r_bn.bias, -1.0)
    health = fsr_health(model, to_float(images))
    record.metrics = {**record.metrics, "fsr_health": health}
    text = model_card(record, "fsr-zoo/resnet18_fsr.at_cifar10").text
    assert health["fsr4"]["r_contribution"] == 0 and health["fsr4"]["r_live_2"] == 0
    assert "**Warning: part of FSR is dead in these weights.**" in text
    assert "fsr4: the Recalibration Net is dead" in text and "in effect FSR without Recalibration" in text
    assert "fsr4: the Recalibration Net has no live units after ReLU 2" in text
    assert (
        f"| fsr4 | 0 | {100 * health['fsr4']['s_live_1']:.0f} / {100 * health['fsr4']['s_live_2']:.0f} | "
        f"{100 * health['fsr4']['r_live_1']:.0f} / 0 |" in text
    )


def test_cards_say_only_what_a_record_holds():
    """A naturally trained model has no training attack; a twin without a training config makes the recipes unknown,
    not different; a final test with PGD-10 (eval_attack_steps 10) is shown as such, not as PGD-20."""
    record = read_record(FSR)
    train = {**record.metrics["train_config"], "method": "natural"}
    natural = Record(record.config, {**record.metrics, "train_config": train})
    text = model_card(natural, "fsr-zoo/x").text
    assert "trained without adversarial examples" in text and "Attack during training" not in text
    untrained = Record(read_record(PLAIN).config, {"test": read_record(PLAIN).metrics["test"], "epochs": 35})
    said = comparison_lines(record, untrained)
    assert "recorded no training config" in said[-2] and "different recipes" not in said[-2]
    test = record.metrics["test"]
    pgd10 = {**test, "accuracy": {"natural": 0.5, "pgd10": 0.25}}
    rows = load_script("hub/zoo_card.py", "zoo_card").results_table(
        {FSR.name: Record(record.config, {**record.metrics, "test": pgd10})}
    )
    assert "| 50.00 | 25.00 (PGD-10) |" in next(r for r in rows if r.startswith(f"| {FSR.name} "))


def test_names_and_repository_ids_of_non_standard_networks():
    def config(arch, **fields):
        return FSRConfig.from_timm_model(timm.create_model(arch, **fields)).to_dict()

    metrics = json.loads((FSR / "metrics.json").read_text())  # a full-data run of the paper's recipe

    def repo_id(config: dict, run_metrics: dict = metrics) -> str:
        return default_repo_id(Record(config, run_metrics))

    quarter = config("resnet18_fsr.at_cifar10", widths=[16, 32, 64, 128])
    assert network_name(quarter) == "ResNet-18-like network (widths 16-32-64-128)"
    assert repo_id(quarter) == "fsr-zoo/resnet18_fsr.at_cifar10.widths16-32-64-128"
    norec = config("resnet18_fsr.at_cifar10", fsr_recalibration=False, fsr_tau=0.5)
    assert network_name(norec) == "ResNet-18"
    assert repo_id(norec) == "fsr-zoo/resnet18_fsr.at_cifar10.tau0.5.norec"
    assert network_name(config("wrn34_10_plain.at_cifar10", depth=16, widen_factor=2)) == "WideResNet-16-2"
    assert network_name(config("wrn34_10_plain.at_cifar10", in_chans=1)) == "WideResNet-34-10 (in_chans 1)"
    assert repo_id(config("resnet18_plain.at_cifar10")) == "fsr-zoo/resnet18_plain.at_cifar10"
    subset = {**metrics, "train_images": 9000, "val_images": 1000}
    assert repo_id(config("resnet18_plain.at_cifar10"), subset) == "fsr-zoo/resnet18_plain.at_cifar10.train9000"


def test_model_card_md_compares_the_shipped_pair_and_speaks_to_users():
    text = (ROOT / "MODEL_CARD.md").read_text()
    for f in (FSR, PLAIN):
        readme = (f / "README.md").read_text()
        assert f"### {f.name}" in text and f"](hub/weights/{f.name}/README.md)" in text
        assert f"python -m fsr_models.evaluate hub/weights/{f.name} " in readme  # every report's command is there
    for name in ("MODEL_CARD.md", *(f"hub/weights/{f.name}/README.md" for f in (FSR, PLAIN))):
        user_text = (ROOT / name).read_text()
        assert not re.search(r"\bissue \d|\.\./shared|REFERENCE\.md|device session", user_text), name
        assert "MIT" in user_text and 'timm.create_model("local-dir:hub/weights/' in user_text, name  # licence, load
    assert (DIFFERENT_RECIPES in text) == recipes_differ(FSR, PLAIN)
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


@pytest.mark.parametrize("shipped", [FSR, PLAIN], ids=["fsr", "plain"])
def test_the_cards_command_repeats_the_recorded_run_setting_for_setting(tmp_path, shipped):
    """The card's `training/train.py --config train_config.yaml --set ...` gives the recorded config."""
    repo = export_repo(shipped, tmp_path / "repo", zoo=ZOO)
    text = ModelCard.load(repo / "README.md").text
    command = re.search(r"--config train_config\.yaml --set (.*?)` repeats the run", text).group(1)
    command = command.replace("<CIFAR-10 folder>", str(tmp_path / "data")).replace(
        "<new folder>", str(tmp_path / "new")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        repeated = load_config(str(repo / "train_config.yaml"), command.split())
    metrics = json.loads((shipped / "metrics.json").read_text())
    recorded = dataclasses.asdict(TrainConfig(**metrics["train_config"]))
    changed = {"data_dir": str(tmp_path / "data"), "output_dir": str(tmp_path / "new")}
    changed |= {"epochs": metrics["epochs"], "time_budget_min": None}  # the budget's epochs, as a fixed plan
    assert dataclasses.asdict(repeated) == {**recorded, **changed}


def shipped_reports(folder: Path) -> list[dict]:
    """A shipped model's measured reports, read from its files without the cards' code: the final test, a later
    evaluation in metrics.json, robustness.json, robustness_adaptive.json (the order the documents show them)."""
    metrics = json.loads((folder / "metrics.json").read_text())
    files = [folder / ROBUSTNESS_NAME, folder / ADAPTIVE_NAME]
    return [metrics["test"], *([metrics["evaluation"]] if "evaluation" in metrics else [])] + [
        json.loads(f.read_text()) for f in files if f.is_file()
    ]


def test_the_results_table_holds_every_measured_report_of_the_zoo():
    rows = list(csv.DictReader((ROOT / "results" / "zoo_robustness.csv").open()))
    assert {FSR, PLAIN} < set(ZOO_FOLDERS)
    expected = [(folder.name, report) for folder in ZOO_FOLDERS for report in shipped_reports(folder)]
    assert [r["model"] for r in rows] == [name for name, _ in expected]
    for row, (_, report) in zip(rows, expected):
        assert (int(row["images"]), row["eps"]) == (report["images"], "8/255")
        for attack in COLUMNS:
            value = report["accuracy"].get(attack)
            assert row[attack] == ("" if value is None else pct(value)), (row["model"], attack)
        found = report.get("found_beyond_pgd20", {})
        assert row["found_beyond_pgd20"] == ";".join(f"{a}:{n}" for a, n in found.items())
    r_contribution = json.loads((FSR / "metrics.json").read_text())["fsr_health"]["fsr4"]["r_contribution"]
    assert float(rows[0]["r_contribution"]) == pytest.approx(r_contribution, rel=1e-3)
    assert "(results/zoo_robustness.csv)" in (ROOT / "MODEL_CARD.md").read_text()


# RobustBench's model_info keys (its model_info/<dataset>/Linf/*.json), which a submission must fill
ROBUSTBENCH_KEYS = {"link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue"}
ROBUSTBENCH_KEYS |= {"architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote"}


@pytest.mark.parametrize("shipped", [FSR, PLAIN], ids=["fsr", "plain"])
def test_robustbench_entries_carry_the_largest_autoattack_report_and_its_images(shipped):
    entry = json.loads((ROOT / "results" / "robustbench" / f"{shipped.name}.json").read_text())
    assert ROBUSTBENCH_KEYS <= set(entry)
    reports = shipped_reports(shipped)
    autoattack = max((r for r in reports if "autoattack" in r["accuracy"]), key=lambda r: r["images"])
    assert entry["autoattack_acc"] == f"{100 * autoattack['accuracy']['autoattack']:.2f}"
    assert entry["clean_acc"] == f"{100 * autoattack['accuracy']['natural']:.2f}"
    assert entry["evaluated_images"]["autoattack"] == autoattack["images"] and entry["eps"] == "8/255"
    assert f"first {autoattack['images']:,} test images" in entry["footnote"]
    assert timm.create_model(entry["timm_name"], pretrained=False).num_classes == 10  # a name timm looks up
    if (shipped / ADAPTIVE_NAME).is_file():
        adaptive_report = json.loads((shipped / ADAPTIVE_NAME).read_text())
        adaptive = 100 * adaptive_report["accuracy"]["adaptive_ensemble"]
        assert entry["evaluated_images"]["adaptive"] == adaptive_report["images"]
        assert ("external" in entry) == (round(adaptive, 2) < float(entry["autoattack_acc"]))


def test_card_of_a_single_step_run_that_collapsed_says_both(train_script, tmp_path, monkeypatch):
    """An N-FGSM run with the cyclic schedule, under its own tag, that ended on catastrophic overfitting: the card
    names the attack, the schedule and the collapse (the epoch it stopped at, of the plan), and its repository is
    the tag's."""
    from conftest import tiny_run_args

    figures = iter([(0.5, 0.1), (0.5, 0.4), (0.5, 0.45), (0.5, 0.1)])  # epoch 3 collapses
    monkeypatch.setattr(train_script, "clean_and_pgd_accuracy", lambda *args, **kwargs: next(figures))
    settings = ["method=at", "attack=nfgsm", "attack_steps=1", "attack_step_size=8/255", "lr_schedule=cyclic"]
    out = tmp_path / "run"
    assert train_script.main(tiny_run_args(out, *settings, "epochs=4", "tag=at_nfgsm_4ep_cifar10")) == 0
    record = read_record(out / "model")
    card = str(model_card(record, default_repo_id(record)))
    assert "N-FGSM (de Jorge et al. 2022): uniform noise of 2 x eps, one signed-gradient step of 8/255" in card
    assert "3 epochs (15 SGD steps of batch 50) (stopped on catastrophic overfitting after epoch 3 of 4" in card
    assert "a cyclic learning rate from 0 up to" in card and "at half of the 4 planned epochs" in card
    assert default_repo_id(record).startswith("fsr-zoo/resnet18_fsr.at_nfgsm_4ep_cifar10")
