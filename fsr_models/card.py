"""Model cards, written from what a run recorded and measured, never by hand.

A zoo folder's records: `metrics.json` (the training script's: its final test as `test`, the run's size, FSR health,
the full config as `train_config`, and a later evaluation's report as `evaluation` where one was added),
`robustness.json` and `robustness_adaptive.json` (reports of `python -m fsr_models.evaluate`; the accuracy-against-eps
curve of one of them is plotted in `robustness_curve.png`), `figure1.png` (`python -m fsr_models.visualize`) and,
in an exported repository, `comparison.json` (the records of the zoo's twin). `Record` reads them; `model_card`
renders a Hub repository's card, whose sections `hub/zoo_card.py` reuses for the zoo's documents.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from huggingface_hub import ModelCard, ModelCardData

from .datasets import SAMPLE_SIZES
from .evaluation.checks import ZERO_GRADIENT, verdict
from .evaluation.protocol import ADAPTIVE, ATTACKS
from .evaluation.report import (
    accuracy_table,
    attack_notes,
    column_title,
    curve_table,
    eps_text,
    eval_results,
    health_table,
    joined,
)
from .facts import (
    BACKBONES,
    DATASETS,
    HF_ORG,
    PAPER_CITATION,
    PAPER_EPOCHS,
    PAPER_EPS,
    is_paper_eps,
    milestone_epochs,
    scaled_lr,
    twin_name,
)
from .fsr import R_CONTRIBUTION_MIN, fsr_health_problems
from .training.config import RESUME_MAY_CHANGE, TrainConfig
from .weight_files import CONFIG_NAME, FSR_HEADS_NAME

METRICS_NAME, ROBUSTNESS_NAME, CURVE_NAME = "metrics.json", "robustness.json", "robustness_curve.png"
ADAPTIVE_NAME, FIGURE_NAME, COMPARISON_NAME = "robustness_adaptive.json", "figure1.png", "comparison.json"
METHOD_NAMES = {"at": "PGD adversarial training (AT, Madry et al.)", "trades": "TRADES", "mart": "MART"}
METHOD_NAMES["natural"] = "natural (non-adversarial) training"
# What a run's place and plumbing were, not what it trained: left out when two runs' recipes are compared
RUN_ONLY_SETTINGS = {"model", *RESUME_MAY_CHANGE}
# The settings a recorded config may lack (written before they existed) at the value such a run ran with
TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
RUN_KEYS = ("train_images", "val_images", "epochs")  # what a trained model's metrics.json records of its run


@dataclass
class Record:
    """A trained model's records (see the module's docstring), as the cards read them."""

    config: dict
    metrics: dict
    robustness: dict | None = None
    adaptive: dict | None = None
    curve_png: bool = False
    comparison: dict | None = None  # {"model": "<arch>.<tag>", "metrics": ..., "robustness": ...}
    fsr_heads: bool = False
    figure_png: bool = False
    folder: Path | None = None  # where the records were read, for messages

    @property
    def name(self) -> str:
        return f"{self.config['architecture']}.{self.config['pretrained_cfg'].get('tag', '')}"

    @property
    def train(self) -> dict:
        """The recorded training config (empty for weights saved without one)."""
        return self.metrics.get("train_config") or {}

    @property
    def reports(self) -> list[tuple[str, dict]]:
        """(title, report) of every measured report: the run's final test first, then the later evaluations."""
        self.check_metrics()
        reports = [("the training run's final test", self.metrics["test"])]
        if "evaluation" in self.metrics:
            reports.append(("a later evaluation (metrics.json, evaluation)", self.metrics["evaluation"]))
        if self.robustness:
            reports.append((f"the robustness evaluation ({ROBUSTNESS_NAME})", self.robustness))
        if self.adaptive:
            reports.append((f"the adaptive evaluation ({ADAPTIVE_NAME})", self.adaptive))
        return reports

    def check_metrics(self) -> None:
        """A ValueError naming the file unless metrics.json holds the final test and, for a trained model, its run."""
        where = f"{self.folder or '.'}/{METRICS_NAME}"
        if "test" not in self.metrics:
            raise ValueError(
                f"{where} has no measured robustness (no 'test' report): a card needs the final test that "
                "training/train.py writes"
            )
        if self.train and (missing := [k for k in RUN_KEYS if self.metrics.get(k) is None]):
            raise ValueError(f"{where} lacks {missing}: it is not one that training/train.py wrote")

    @property
    def eval_results(self) -> list:
        """Every report as the card's metadata (the Hub's eval results)."""
        return [result for _, report in self.reports for result in eval_results(report)]

    def largest_with(self, attack: str) -> dict | None:
        """The report with `attack` (e.g. "autoattack") on the most images; None if none has it."""
        having = [r for _, r in self.reports if attack in r["accuracy"]]
        return max(having, key=lambda r: r["images"], default=None)

    @property
    def curve_report(self) -> dict | None:
        """The report holding the robustness curve: robustness.json's, else the adaptive one's (`--sanity`)."""
        return next((r for r in (self.robustness, self.adaptive) if r and "curve" in r), None)

    @property
    def run(self) -> dict:
        """The run's size and data: images, epochs, steps, and whether only part of the training images served."""
        self.check_metrics()
        m, train = self.metrics, self.train
        dataset = train.get("dataset") or self.metrics.get("test", {}).get("dataset", "cifar10")
        full = DATASETS[dataset].train_images
        used = m.get("train_images", 0) + m.get("val_images", 0)
        return {
            "dataset": dataset,
            "available": SAMPLE_SIZES["train"] if str(train.get("data_dir")) == "sample" else full,
            "subset": bool(used) and used < full,
            **{k: m.get(k) for k in ("train_images", "val_images", "epochs", "sgd_steps")},
            "batch_size": train.get("batch_size"),
        }


def read_record(folder: str | Path) -> Record:
    folder = Path(folder)
    read = lambda name: json.loads((folder / name).read_text()) if (folder / name).is_file() else None  # noqa: E731
    have = lambda name: (folder / name).is_file()  # noqa: E731
    return Record(
        read(CONFIG_NAME),
        read(METRICS_NAME),
        read(ROBUSTNESS_NAME),
        read(ADAPTIVE_NAME),
        have(CURVE_NAME),
        read(COMPARISON_NAME),
        have(FSR_HEADS_NAME),
        have(FIGURE_NAME),
        folder,
    )


# --- what was trained, and the repository's name ------------------------------------------------------------------


@functools.cache
def paper_backbone_args(architecture: str) -> dict:
    """The paper network's own architecture arguments (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        return {"in_chans": 3, "global_pool": "avg", **timm.create_model(architecture).backbone_args}


def _dashed(value) -> str:
    items = value if isinstance(value, (list, tuple)) else [value]
    return "-".join("x".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in items)


def network_name(config: dict) -> str:
    """'ResNet-18', 'WideResNet-28-4', or 'ResNet-18-like network (<what differs from the paper's>)'."""
    backbone, args = config["backbone"], config.get("backbone_args") or {}
    if backbone == "wrn34_10":
        paper = paper_backbone_args(config["architecture"])
        depth, widen = (args.get(k, paper[k]) for k in ("depth", "widen_factor"))
        other = [f"{k} {v}" for k, v, _ in _backbone_deviations(config) if k not in ("depth", "widen_factor")]
        return f"WideResNet-{depth}-{widen}" + (f" ({', '.join(other)})" if other else "")
    differs = [f"{key} {value}" for key, value, _ in _backbone_deviations(config)]
    name = BACKBONES[backbone].name
    return f"{name}-like network ({', '.join(differs)})" if differs else name


def _backbone_deviations(config: dict) -> list[tuple[str, str, str]]:
    """(argument, value as text, sentence) for each architecture argument that differs from the paper's."""
    paper = paper_backbone_args(config["architecture"])
    return [
        (key, _dashed(value), f"{key} {_dashed(value)} (the paper's: {_dashed(paper.get(key))})")
        for key, value in (config.get("backbone_args") or {}).items()
        if value != paper.get(key)
    ]


def deviations(record: Record) -> list[tuple[str, str]]:
    """How a run differs from the paper's setting of its tag, as (repository-name part, sentence): the network, FSR's
    settings, a subset of the training images, another eps. A shorter schedule is not among them (its card says it)."""
    config = record.config
    out = [(f"{key.replace('_', '')}{value}", text) for key, value, text in _backbone_deviations(config)]
    stages = config.get("fsr_stages") or []
    if stages:
        paper_stages = list(BACKBONES[config["backbone"]].fsr_stages)
        if stages != paper_stages:
            out.append(
                (f"fsr{_dashed(stages)}", f"FSR {after_stages(stages)} (the paper's: {after_stages(paper_stages)})")
            )
        if config.get("fsr_tau", 0.1) != 0.1:
            out.append((f"tau{config['fsr_tau']:g}", f"mask temperature tau {config['fsr_tau']:g} (the paper's: 0.1)"))
        for part, stage in (("sep", "Separation"), ("rec", "Recalibration")):
            if config.get(f"fsr_{stage.lower()}") is False:
                out.append((f"no{part}", f"without FSR's {stage} stage (the paper's 'w/o {part.title()}' ablation)"))
        if config.get("fsr_output", "f_tilde") != "f_tilde":
            output = config["fsr_output"]
            out.append((f"out{output.replace('_', '')}", f"FSR passes on {output} (the paper's Table 5 analysis)"))
        for key in ("lambda_sep", "lambda_rec"):
            if config.get(key, 1.0) != 1.0:
                out.append((f"{key.replace('ambda_', '')}{config[key]:g}", f"{key} {config[key]:g} (the paper's: 1)"))
    run = record.run
    if run["subset"]:
        out.append(
            (
                f"train{run['train_images']}",
                f"trained on {run['train_images']:,} of the {DATASETS[run['dataset']].train_images:,} "
                f"{DATASETS[run['dataset']].name} training images",
            )
        )
    eps = record.train.get("eps") or record.metrics.get("test", {}).get("eps", PAPER_EPS)
    if not is_paper_eps(eps):
        out.append((f"eps{eps * 255:g}", f"trained for eps {eps_text(eps)} (the paper's: 8/255)"))
    return out


def paper_repo_id(config: dict) -> str:
    return f"{HF_ORG}/{config['architecture']}.{config['pretrained_cfg']['tag']}"


def default_repo_id(record: Record) -> str:
    """`fsr-zoo/<architecture>.<tag>` in the paper's setting of the tag, else with the deviations appended
    (`fsr-zoo/resnet18_fsr.at_cifar10.widths16-32-64-128.train250`): a paper tag's name is never taken."""
    return ".".join([paper_repo_id(record.config), *(part for part, _ in deviations(record))])


def after_stages(stages: list[int]) -> str:
    """'after stage 4', 'after stages 3 and 4'."""
    return f"after stage{'s' if len(stages) > 1 else ''} {joined([str(s) for s in stages])}"


# --- what was measured --------------------------------------------------------------------------------------------


def evaluate_command(model: str, report: dict) -> str:
    """The `python -m fsr_models.evaluate` command that measures `report` again."""
    data_dir = f"<{DATASETS[report['dataset']].name} folder>"
    if str(report.get("data_source") or "").startswith("sample"):
        data_dir = "sample"
    twin = report["settings"].get("transfer_twin", {}).get("transfer_from")
    if twin and model.startswith("hf-hub:") and twin_name(Path(twin).name):  # a zoo folder: its repository
        twin = f"hf-hub:{HF_ORG}/{Path(twin).name}"
    options = [
        f"--dataset {report['dataset']}",
        f"--data-dir {data_dir}",
        f"--n {report['images']} --attacks {' '.join(a for a in report['accuracy'] if a in ATTACKS)}",
        *([f"--eps {eps_text(report['eps'])}"] if not is_paper_eps(report["eps"]) else []),
        *(["--strong"] if report.get("strong") else []),
        *(["--sanity"] if sanity_ran(report) else ["--curve"] if "curve" in report else []),
        *([f"--seed {report['seed']}"] if report.get("seed") else []),
        *([f"--twin {twin}"] if twin else []),
    ]
    return f"python -m fsr_models.evaluate {model} {' '.join(options)}"


def sanity_ran(report: dict) -> bool:
    """Whether `--sanity` ran with an evaluation (its zero-gradient check is one that only it runs)."""
    return any(c["check"] == ZERO_GRADIENT for c in report.get("sanity_checks", []))


def report_lines(title: str, report: dict, model: str, final_test: bool) -> list[str]:
    """One report: on which images, its accuracy table, what the adaptive attacks found, the checks that ran with it
    (not with the training run's `final_test`, which runs none), and the command that measures it again."""
    starts = "a random start and 5 restarts" if report.get("strong") else "no random start (the paper's protocol)"
    lines = [
        f"{title[0].upper()}{title[1:]}: accuracy (%) on the first {report['images']:,} "
        f"{DATASETS[report['dataset']].name} test images, eps {eps_text(report['eps'])} (L-inf), eval mode, PGD "
        f"with step eps/10 and {starts}:",
        "",
        *accuracy_table(report),
        "",
        *adaptive_finding(report),
    ]
    if not final_test:
        checks = report.get("sanity_checks", [])
        ran = "; ".join(f"{'passed' if c['passed'] else 'FAILED'}: {c['check']}" for c in checks)
        said = [f"Checks that ran with this evaluation: {ran}. Verdict: {verdict(checks)}."] if checks else []
        if not sanity_ran(report):
            fsr = " and FSR's activity" if report.get("fsr_health") else ""
            said.append(
                "`--sanity` did not run with it: random restarts, accuracy against eps, zero input gradients, "
                f"determinism{fsr} were not checked."
            )
        lines += [" ".join(said), ""]
    unmeasurable = [column_title(a) for a in report["accuracy"] if a not in ATTACKS and "ensemble" not in a]
    not_its = f" ({', '.join(unmeasurable)} is not one of its attacks)" if unmeasurable else ""
    return lines + [f"Measure again: `{evaluate_command(model, report)}`{not_its}.", ""]


def adaptive_finding(report: dict) -> list[str]:
    """Whether the adaptive attacks find more than the report's PGD-20, plainly; what each finds beyond it, and each
    candidate (temperature, loss, starting point) alone."""
    accuracy = report["accuracy"]
    designed = [a for a in ADAPTIVE if a in accuracy]
    if not designed or "pgd20" not in accuracy:
        return []
    lowest = min(designed, key=accuracy.get)
    figures = (
        f"{100 * accuracy['pgd20']:.2f} % under PGD-20, {100 * accuracy[lowest]:.2f} % under {column_title(lowest)} "
        "(the lowest of the adaptive attacks, each the per-image worst case over its candidates and PGD-20)"
    )
    if "adaptive_ensemble" in accuracy:
        figures += f", {100 * accuracy['adaptive_ensemble']:.2f} % under every attack of the table together"
    if accuracy["pgd20"] - accuracy[lowest] >= 0.005:
        lines = [f"**The adaptive attacks find more than PGD-20**: {figures}. PGD-20 overstates its robustness.", ""]
    else:
        lines = [f"The adaptive attacks find no more than PGD-20 on these images: {figures}.", ""]
    if found := report.get("found_beyond_pgd20"):
        counts = ", ".join(f"{column_title(a)} {n}" for a, n in found.items() if a in ATTACKS)
        lines += [
            f"What each attack finds beyond PGD-20 (images it fools that PGD-20 leaves standing, of "
            f"{report['images']:,}): {counts}.",
            "",
        ]
    if candidates := report.get("candidates"):
        lines += ["| attack | candidate | accuracy (%) |", "| --- | --- | --- |"]
        lines += [
            f"| {column_title(a)} | {label} | {100 * v:.2f} |" for a, c in candidates.items() for label, v in c.items()
        ]
        softened = any(label.startswith("T=") for c in candidates.values() for label in c)
        lines += [
            "",
            "Each candidate alone, before the per-image worst case with PGD-20 that the attack's column shows"
            + (" (T: the factor by which the mask's temperature is raised for the gradient)." if softened else "."),
            "",
        ]
    return lines


def headline_lines(record: Record) -> list[str]:
    """The robustness to quote: the adaptive evaluation's worst case per image over all its attacks, beside the final
    test's PGD-20; nothing without an adaptive evaluation."""
    worst = record.adaptive["accuracy"].get("adaptive_ensemble") if record.adaptive else None
    if worst is None:
        return []
    test = record.metrics["test"]
    attacks = joined([column_title(a) for a in record.adaptive["accuracy"] if a in ATTACKS])
    pgd = next((k for k in test["accuracy"] if k.startswith("pgd")), None)
    paper = (
        f"; {100 * test['accuracy'][pgd]:.2f} % under {column_title(pgd)} with the paper's protocol on " if pgd else ""
    )
    paper += f"{test['images']:,} test images" if pgd else ""
    return [
        f"**Robustness to quote: {100 * worst:.2f} %** under every attack of its adaptive evaluation together (per "
        f"image, the worst case over {attacks}; first {record.adaptive['images']:,} test images){paper}.",
        "",
    ]


def health_lines(record: Record) -> list[str]:
    """FSR's health figures (robustness.json's, else metrics.json's), with a plain warning where part of FSR is dead."""
    source = next((r for r in (record.robustness, record.metrics) if r and r.get("fsr_health")), None)
    if source is None:
        return [
            "No FSR health figures were recorded with these weights (training/train.py and `python -m "
            "fsr_models.evaluate` record them).",
            "",
        ]
    health, images = source["fsr_health"], source.get("images", record.metrics["test"]["images"])
    lines = [
        f"How alive each FSR module is on the first {images:,} test images, with these weights: R contribution "
        "is |(1 - m) R(f-)| / |f-|, the size of what the Recalibration Net adds to f- relative to f-; 'units live' "
        "is the share of hidden channels after each BN + ReLU of the Separation (S) and Recalibration (R) "
        "Nets that are positive for some image; m is the separation mask.",
        "",
        *health_table(health),
        "",
    ]
    if problems := fsr_health_problems(health):
        lines += ["**Warning: part of FSR is dead in these weights.**", "", *(f"- {p}" for p in problems), ""]
        if any(h.get("r_contribution", 1.0) < R_CONTRIBUTION_MIN for h in health.values()):
            lines += [
                "So this model is in effect FSR without Recalibration (the paper's 'w/o Rec' ablation), not "
                "the paper's FSR, until it is retrained.",
                "",
            ]
    return lines


def measured_lines(record: Record, model: str, files: str = "") -> list[str]:
    """Everything measured of a model: every report, the notes on its attacks, the robustness curve and, with FSR,
    its health and Figure 1. `model` is how the evaluation command names it; `files`, the path of its folder as the
    document showing its images sees it."""
    lines = []
    for i, (title, report) in enumerate(record.reports):
        lines += report_lines(title, report, model, final_test=i == 0)
    if notes := attack_notes(report for _, report in record.reports):
        lines += [notes, ""]
    if curve := (record.curve_report or {}).get("curve"):
        lines += [f"![Accuracy against eps]({files}{CURVE_NAME})", ""] if record.curve_png else []
        lines += [
            f"Accuracy (%) against eps, {curve['attack']}, on the first {curve['images']:,} "
            f"{DATASETS[record.curve_report['dataset']].name} test images:",
            "",
            *curve_table(curve),
            "",
        ]
    if record.config.get("fsr_stages"):
        lines += ["### FSR health", "", *health_lines(record)]
    if record.config.get("fsr_stages") and record.figure_png:
        lines += [
            "### What FSR does under attack (the paper's Figure 1)",
            "",
            f"![Grad-CAM maps of FSR's features]({files}{FIGURE_NAME})",
            "",
            "Per test image: the image, its PGD-20 adversarial version, and Grad-CAM maps (for the true class) of "
            "FSR's robust feature f+, non-robust feature f- and recalibrated non-robust feature f~- on the adversarial "
            "image, with a plain network's final feature f on the clean image where a column shows it. Identical f- "
            "and f~- maps mean the Recalibration Net contributes nothing. Drawn by `python -m fsr_models.visualize`.",
            "",
        ]
    return lines


def comparison_lines(this: Record, other: Record) -> list[str]:
    """Two zoo models measured side by side (the same network with and without FSR, same tag): the final tests and
    the largest AutoAttack reports where both have them on as many images, who is ahead, how their training differed."""
    columns = []  # (title, (this value, other value))
    tests = (this.metrics["test"], other.metrics["test"])
    if tests[0]["images"] == tests[1]["images"]:
        for key in (k for k in tests[0]["accuracy"] if k in tests[1]["accuracy"]):
            columns.append((f"{column_title(key)} ({tests[0]['images']:,})", [t["accuracy"][key] for t in tests]))
    autoattack = (this.largest_with("autoattack"), other.largest_with("autoattack"))
    if all(autoattack) and autoattack[0]["images"] == autoattack[1]["images"]:
        title = f"AutoAttack (first {autoattack[0]['images']:,})"
        columns.append((title, [r["accuracy"]["autoattack"] for r in autoattack]))
    lines = ["| model | epochs | " + " | ".join(t for t, _ in columns) + " |", "| --- " * (len(columns) + 2) + "|"]
    for i, record in enumerate((this, other)):
        values = " | ".join(f"{100 * v[i]:.2f}" for _, v in columns)
        lines.append(f"| {record.name} | {record.metrics['epochs']} | {values} |")
    ahead = {this.name: [], other.name: []}
    for title, (mine, theirs) in columns:
        if diff := round(100 * (mine - theirs), 2):
            ahead[this.name if diff > 0 else other.name].append(f"{title.split(' (')[0]} (+{abs(diff):.2f} points)")
    said = [f"`{name}` is ahead on {joined(leads)}" for name, leads in ahead.items() if leads]
    lines += ["", ("; ".join(said) if said else "The two are equal on every measure") + "."]
    # the epochs each run trained (a time budget fits them after the first epoch), not those its config planned
    mine, theirs = ({**TRAIN_DEFAULTS, **r.train, "epochs": r.metrics["epochs"]} for r in (this, other))
    differ = [k for k in sorted(set(mine) | set(theirs)) if k not in RUN_ONLY_SETTINGS and mine.get(k) != theirs.get(k)]
    if not (this.train and other.train):
        same = "One of them recorded no training config: how their training differed is not known"
    elif differ:
        same = "Their training configs differ in " + ", ".join(
            f"{k} ({mine.get(k)} vs {theirs.get(k)})" for k in differ
        )
        same += ": they were trained with different recipes, so this comparison does not say whether FSR helps or hurts"
    else:
        same = "Both were trained with the same config apart from the network"
        if this.metrics["epochs"] != other.metrics["epochs"] and mine.get("time_budget_min"):
            same += (
                f"; the {mine['time_budget_min']:g}-minute budget fitted {this.metrics['epochs']} epochs to "
                f"`{this.name}` and {other.metrics['epochs']} to `{other.name}`"
            )
    return lines + ["", same + ".", ""]


# --- how it was trained, and the card -----------------------------------------------------------------------------


def schedule_text(record: Record) -> str:
    """'32 epochs (3,040 SGD steps of batch 512), no warm-up, lr x0.1 after epoch 24, then x0.1 after epoch 29'."""
    train, run, metrics = record.train, record.run, record.metrics
    steps = f" ({run['sgd_steps']:,} SGD steps of batch {run['batch_size']})" if run["sgd_steps"] else ""
    warmup = train.get("warmup_epochs", 0)
    warmup = f"a linear learning-rate warm-up over {warmup:g} epochs" if warmup else "no warm-up"
    if metrics.get("extensions"):
        drops = f"at {', '.join(f'{100 * f:g}%' for f in train['lr_milestones'])} of the planned epochs; extended "
        drops += ", ".join(
            f"after epoch {e['after_epoch']} from {e['from']} to {e['to']} epochs (lr: {e['lr']})"
            for e in metrics["extensions"]
        )
        return f"{run['epochs']} epochs{steps}, {warmup}, lr x{train['lr_gamma']:g} {drops}"
    collapse = metrics.get("collapse")
    stopped = (
        f" (stopped on catastrophic overfitting after epoch {collapse['epoch']} of {train['epochs']}: validation "
        f"PGD accuracy fell to {100 * collapse['val_pgd_acc']:.1f}% from {100 * collapse['best_val_pgd_acc']:.1f}%)"
        if collapse
        else ""
    )
    if train.get("lr_schedule") == "cyclic":
        peak = scaled_lr(train["lr_per_128"], train["batch_size"])
        return (
            f"{run['epochs']} epochs{steps}{stopped}, a cyclic learning rate from 0 up to {peak:g} at half of the "
            f"{train['epochs']} planned epochs and down to 0 at their end"
        )
    planned = train["epochs"] if collapse else run["epochs"]
    after = Counter(m for m in milestone_epochs(train["lr_milestones"], planned) if m < run["epochs"])
    drops = ", then ".join(f"x{train['lr_gamma'] ** k:g} after epoch {m}" for m, k in sorted(after.items()))
    lr = drops or "constant (its drops fall after the last epoch)"
    return f"{run['epochs']} epochs{steps}{stopped}, {warmup}, lr {lr}"


def training_attack(train: dict) -> str:
    """The attack that formed the training batches, in words."""
    if train.get("attack") == "nfgsm":
        return (
            f"N-FGSM (de Jorge et al. 2022): uniform noise of {train['attack_noise']:g} x eps, one signed-gradient "
            f"step of {eps_text(train['attack_step_size'])}, no projection back to the eps {eps_text(train['eps'])} "
            "ball"
        )
    start = "a" if train["random_start"] else "no"
    return (
        f"PGD-{train['attack_steps']}, eps {eps_text(train['eps'])}, step {eps_text(train['attack_step_size'])}, "
        f"{start} random start"
    )


def start_lines(record: Record) -> list[str]:
    """For a fine-tuned model: the model it started from, and that model's final test beside this one's."""
    start = record.metrics.get("init")
    if not start:
        return []
    line = f"- **Fine-tuned from `{start['model']}`**, not trained from scratch"
    test = start.get("test")
    if test:
        mine = record.metrics["test"]
        line += f"; its final test: {figures_text(test)}; this model's: {figures_text(mine)}"
    return [line]


def figures_text(report: dict) -> str:
    """'natural 75.37, pgd20 47.22 (10,000 CIFAR-10 test images)'."""
    accuracy = ", ".join(
        f"{name} {100 * value:.2f}" for name, value in report["accuracy"].items() if name != "ensemble"
    )
    return f"{accuracy} ({report['images']:,} test images)"


def summary_line(record: Record) -> str:
    """One sentence: the network, with or without FSR, the method, the images and the schedule."""
    stages, train, run = record.config.get("fsr_stages"), record.train, record.run
    where = f"with FSR {after_stages(stages)}" if stages else "without FSR"
    if not train:
        return f"{network_name(record.config)} {where}; no training config was recorded with these weights."
    method = METHOD_NAMES.get(train["method"], train["method"])
    method += f" (beta {train['beta']:g})" if train["method"] in ("trades", "mart") else ""
    budget = f", in a {train['time_budget_min']:g}-minute budget" if train.get("time_budget_min") else ""
    return (
        f"{network_name(record.config)} {where}, {method} on {run['train_images']:,} "
        f"{DATASETS[run['dataset']].name} training images: {schedule_text(record)}{budget}."
    )


def training_lines(record: Record) -> list[str]:
    train, run = record.train, record.run
    if not train:
        return ["No training config was recorded with these weights.", ""]
    lines = []
    if run["epochs"] < PAPER_EPOCHS:
        lines += [
            f"**Short schedule: {run['epochs']} epochs, not the paper's {PAPER_EPOCHS}-epoch recipe.** Expect "
            "lower accuracy than the paper reports.",
            "",
        ]
    sample = " in the shipped sample" if str(train.get("data_dir")) == "sample" else ""
    subset = f" (of {run['available']:,}{sample})" if run["subset"] else ""
    fsr = f" + FSR's (Eq. 5: lambda_sep {train['lambda_sep']:g}, lambda_rec {train['lambda_rec']:g})"
    again = f" epochs={run['epochs']} time_budget_min=null" if train.get("time_budget_min") else ""
    return lines + [
        f"- {summary_line(record)} Best epoch {record.metrics.get('best_epoch', '?')}.",
        f"- Data: {run['train_images']:,} training images{subset}; {run['val_images']:,} more held out for "
        "validation (the saved weights are those of the best epoch by PGD accuracy on them); augmentation "
        f"{'pad-4 crop + flip' if train['augment'] else 'none'}",
        *([f"- Losses: the method's{fsr}"] if record.config.get("fsr_stages") else []),
        *([] if train["method"] == "natural" else [f"- Attack during training: {training_attack(train)}"]),
        *start_lines(record),
        f"- Optimiser: SGD lr {scaled_lr(train['lr_per_128'], train['batch_size']):g} ({train['lr_per_128']:g} per "
        f"128 images; momentum {train['momentum']:g}, weight decay {train['weight_decay']:g}), {train['precision']}"
        + (f"; {record.metrics['train_seconds']:.0f} s of training" if "train_seconds" in record.metrics else ""),
        "",
        "The full config is `train_config.yaml` in this repository; with the fsr-zoo code, `python training/train.py "
        f"--config train_config.yaml --set data_dir=<{DATASETS[run['dataset']].name} folder> output_dir=<new "
        f"folder>{again}` repeats the run.",
        "",
    ]


def use_lines(timm_name: str, hf_name: str, input_size, remote_code: bool) -> list[str]:
    """How the model loads in timm, transformers and the pipeline (and without fsr-zoo, where the repository carries
    its own code); the snippet runs as it is."""
    channels, height, width = input_size
    remote = [
        "",
        "# without fsr-zoo (torch and transformers only) the repository's own code gives the same logits",
        f'model = AutoModelForImageClassification.from_pretrained("{hf_name}", trust_remote_code=True)',
    ]
    return [
        "```python",
        "import torch",
        "import fsr_models  # registers the architectures with timm and transformers",
        "import timm",
        "from transformers import AutoModelForImageClassification, pipeline",
        "",
        f"images = torch.rand(8, {channels}, {height}, {width})  # RGB pixels in [0, 1], no normalisation",
        "# timm's create_model returns train mode: eval() before classifying",
        f'model = timm.create_model("{timm_name}", pretrained=True).eval()',
        "logits = model(images)",
        "",
        "# transformers returns eval mode; the pipeline takes PIL images and gives label names",
        f'hf_model = AutoModelForImageClassification.from_pretrained("{hf_name}")',
        "logits = hf_model(pixel_values=images).logits",
        f'classify = pipeline("image-classification", model="{hf_name}")',
        *(remote if remote_code else []),
        "```",
        "",
    ]


def limits_lines(threat_model: str) -> list[str]:
    return [
        f"Research weights for studying adversarial robustness. Their robustness holds only in the threat model "
        f"they were trained and measured for, {threat_model}. It is not certified, it says nothing about other "
        "norms, larger budgets, patches, corruptions or other data, and stronger or adaptive attacks may lower the "
        "figures measured here. Inputs are [0, 1] pixels without normalisation (the image processor does that for "
        "the pipeline). The code and weights are under the MIT licence; the FSR method is Kim et al.'s (CVPR 2023): "
        "cite their paper when you use it.",
        "",
        "```bibtex",
        PAPER_CITATION,
        "```",
        "",
    ]


def model_card(record: Record, repo_id: str) -> ModelCard:
    """The card of one Hub repository: metadata (with every measured result) and what a user needs to know."""
    eval_results = record.eval_results  # a ValueError without the final test
    config, test, dataset = record.config, record.metrics["test"], DATASETS[record.run["dataset"]]
    data = ModelCardData(
        library_name="timm",
        license="mit",
        pipeline_tag="image-classification",
        datasets=[dataset.hub_id],
        tags=[
            "image-classification",
            "timm",
            "transformers",
            "safetensors",
            "adversarial-robustness",
            "adversarial-training",
            "feature-separation-and-recalibration",
        ],
        model_name=repo_id,
        eval_results=eval_results,
    )
    stages, tag = config.get("fsr_stages"), config["pretrained_cfg"].get("tag", "")
    _, height, width = config["pretrained_cfg"]["input_size"]
    where = f"with FSR {after_stages(stages)} of the backbone" if stages else "without FSR (the paper's baseline)"
    natural = record.train.get("method") == "natural"
    trained = "trained without adversarial examples, measured against" if natural else "adversarially trained to resist"
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A {network_name(config)} image classifier for {dataset.name} ({config['num_classes']} classes, "
        f"{height}x{width} inputs in [0, 1]) {where}, {trained} L-inf attacks "
        f"of eps {eps_text(test['eps'])}: timm architecture `{config['architecture']}`, tag `{tag}` of fsr-zoo. FSR "
        "is Feature Separation and Recalibration (Kim et al., CVPR 2023).",
        "",
    ]
    if differs := deviations(record):
        lines += [f"**Not the paper's setting of `{record.name}`:**", "", *(f"- {t}" for _, t in differs), ""]
    lines += headline_lines(record)
    if stages:
        heads = f" (the trained ones are in `{FSR_HEADS_NAME}`, for fine-tuning)" if record.fsr_heads else ""
        lines += [
            "FSR splits the feature map with a learned mask into robust and non-robust activations (Separation) and "
            "adjusts the non-robust ones to carry useful cues again (Recalibration); the sum replaces the feature "
            f"map. The auxiliary heads that train the mask are not part of the network{heads}.",
            "",
        ]
    lines += ["## Training", "", *training_lines(record), "## Evaluation", ""]
    lines += measured_lines(record, f"hf-hub:{repo_id}")
    if record.comparison:
        arch, other_tag = record.comparison["model"].split(".", 1)
        named = {"architecture": arch, "pretrained_cfg": {"tag": other_tag}}
        other = Record(named, record.comparison["metrics"], record.comparison.get("robustness"))
        lines += [
            f"## Compared with {'the plain baseline' if stages else 'the same network with FSR'}",
            "",
            "Measured the same way (accuracy %, test images in brackets):",
            "",
            *comparison_lines(record, other),
        ]
    lines += ["## Use", "", *use_lines(f"hf-hub:{repo_id}", repo_id, config["pretrained_cfg"]["input_size"], True)]
    threat = f"L-inf perturbations of at most {eps_text(test['eps'])} on {dataset.name}-like {height}x{width} images"
    lines += ["## Intended use, limits and citation", "", *limits_lines(threat)]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n" + "\n".join(lines))
