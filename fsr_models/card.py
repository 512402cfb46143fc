"""Model cards for the zoo's Hub repositories, written from what a run recorded and measured, never by hand.

`metrics.json` is the training script's record: the test-set results of the final evaluation, the run's size
(`train_images`, `val_images`, `sgd_steps`; derived from the config for older runs), the FSR health of the saved
weights, the full training config under `train_config`, and, when `training/gpu_run.sh` or a later evaluation added
it, the report of `python -m fsr_models.evaluate` under `evaluation`. A folder may also hold `robustness.json` (an
evaluation report with the accuracy-against-eps curve and FSR health, `--curve`), its plot `robustness_curve.png`,
and `comparison.json` (the record of the zoo model the card compares against: the same network with or without FSR,
same tag). Every number in a card comes from these files.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from huggingface_hub import ModelCard, ModelCardData

from .datasets import SAMPLE_SIZES
from .evaluation.checks import ZERO_GRADIENT, verdict
from .evaluation.protocol import ADAPTIVE, ATTACKS, attack_settings, pgd_settings
from .evaluation.report import accuracy_table, column_title, curve_table, eval_results, health_table
from .facts import BACKBONES, DATASETS, HF_ORG, PAPER_EPOCHS, PAPER_EPS, is_paper_eps, milestone_epochs, scaled_lr
from .fsr import R_CONTRIBUTION_MIN, fsr_health_problems
from .renames import saved_settings
from .training.config import RESUME_MAY_CHANGE
from .weights import CONFIG_NAME, FSR_HEADS_NAME

METRICS_NAME, ROBUSTNESS_NAME, CURVE_NAME = "metrics.json", "robustness.json", "robustness_curve.png"
ADAPTIVE_NAME = "robustness_adaptive.json"  # the report of the attacks designed against FSR (fsr_models.adaptive)
FIGURE_NAME = "figure1.png"  # the paper's Figure 1 for this model (python -m fsr_models.visualize)
COMPARISON_NAME = "comparison.json"
METHOD_NAMES = {
    "at": "PGD adversarial training (AT, Madry et al.)",
    "trades": "TRADES",
    "mart": "MART",
    "natural": "natural (non-adversarial) training",
}
WIDTH_NAMES = {0.125: "eighth-width", 0.25: "quarter-width", 0.5: "half-width", 2: "double-width"}
TWIN_NOTE = "Transfer from twin: PGD-20 crafted on the zoo's same network with FSR, or without it for an FSR model."
WITHOUT_REC_NOTE = (
    "Transfer from w/o Rec: PGD-20 crafted on this model's own w/o Rec ablation (FSR passing on f+ only)."
)
# Settings that say where and how a run ran, not what it trained (those a resume may change): left out when two
# runs' recipes are compared
RUN_ONLY_SETTINGS = {"model", *RESUME_MAY_CHANGE}
MASK_SURROGATE_NOTE = (
    "Mask surrogate: PGD-20 on cross-entropy and on the C&W margin whose gradients go through FSR's mask softened "
    "2x, 10x, 100x and 1000x (BPDA; the forward is the model's own); Mask surrogate APGD: AutoAttack's APGD-CE and "
    "APGD-DLR through the same softened masks."
)
ATTACK_NOTES = {  # said once under the tables where the attack appears
    "cw": "C&W is PGD-30 on the C&W margin loss (kappa 50).",
    "autoattack": "AutoAttack is the standard version of the reference code (pyautoattack).",
    "ensemble": "Ensemble counts an image only if it is classified correctly clean and under each of FGSM, PGD-20, "
    "PGD-100 and C&W that its table shows (the paper's set: AutoAttack, APGD-CE and the other attacks are not part "
    "of it, so AutoAttack may be below it).",
    "ti_fgsm": "TI-FGSM and DI-FGSM are transfer attacks, crafted on the model named in their settings.",
    "di_fgsm": "TI-FGSM and DI-FGSM are transfer attacks, crafted on the model named in their settings.",
    "nattack": "NAttack is a query-based black-box attack (Li et al. 2019).",
    "apgd_ce": "APGD-CE is AutoAttack's first attack alone (reference code, 100 iterations, 1 restart).",
    "mask_surrogate": MASK_SURROGATE_NOTE,
    "mask_surrogate_apgd": MASK_SURROGATE_NOTE,
    "feature_space": "Feature space: PGD moving the feature FSR passes on towards that of the nearest image of "
    "another class, then PGD-20 from there.",
    "transfer_twin": TWIN_NOTE,
    "transfer_without_rec": WITHOUT_REC_NOTE,
    "adaptive_ensemble": "Each adaptive attack keeps, per image, the worst case with PGD-20; the adaptive ensemble "
    "counts an image only if it withstands every attack of its table.",
}
CITATION = """@inproceedings{kim2023fsr,
  title     = {Feature Separation and Recalibration for Adversarial Robustness},
  author    = {Kim, Woo Jae and Cho, Yoonki and Jung, Junsik and Yoon, Sung-Eui},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2023}
}"""


@dataclass
class Record:
    """What a zoo folder or repository records about its model, as a card reads it."""

    config: dict
    metrics: dict
    robustness: dict | None = None  # robustness.json
    adaptive: dict | None = None  # robustness_adaptive.json
    curve_png: bool = False  # robustness_curve.png is there
    comparison: dict | None = None  # comparison.json: {"model": "<arch>.<tag>", "metrics": its metrics.json}
    fsr_heads: bool = False  # fsr_heads.safetensors is there
    figure_png: bool = False  # figure1.png is there

    @property
    def name(self) -> str:
        return f"{self.config['architecture']}.{self.config['pretrained_cfg'].get('tag', '')}"

    @property
    def curve_report(self) -> dict | None:
        """The report that holds the robustness curve (robustness_curve.png is its plot): robustness.json's, else
        the adaptive evaluation's (`--sanity` measures one)."""
        return next((r for r in (self.robustness, self.adaptive) if r and "curve" in r), None)


def train_config(metrics: dict) -> dict:
    """The training config a run recorded, as today's settings (`saved_settings`: also for runs written before a
    rename or before a setting existed); empty when it recorded none."""
    recorded = metrics.get("train_config")
    return saved_settings(recorded) if recorded else {}


def read_record(folder: str | Path) -> Record:
    folder = Path(folder)
    read = lambda name: json.loads((folder / name).read_text()) if (folder / name).is_file() else None  # noqa: E731
    return Record(
        read(CONFIG_NAME),
        read(METRICS_NAME),
        read(ROBUSTNESS_NAME),
        read(ADAPTIVE_NAME),
        (folder / CURVE_NAME).is_file(),
        read(COMPARISON_NAME),
        (folder / FSR_HEADS_NAME).is_file(),
        (folder / FIGURE_NAME).is_file(),
    )


# --- what was trained ---------------------------------------------------------------------------------------------


@functools.cache
def paper_backbone_args(architecture: str) -> dict:
    """The paper network's own architecture arguments (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        return timm.create_model(architecture).backbone_args


def _dashed(values) -> str:
    return "-".join("x".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in values)


def _stage_widths(backbone: str, args: dict) -> tuple[list, list]:
    """(widths, depths) per stage of a ResNet or VGG, from its architecture arguments."""
    if backbone == "vgg16":
        return [c for c, _ in args["stages"]], [n for _, n in args["stages"]]
    return list(args["widths"]), list(args["layers"])


def network_name(config: dict) -> str:
    """The network as a reader should know it: 'ResNet-18', 'quarter-width ResNet-18 (widths 16-32-64-128)',
    'WideResNet-28-4', or the backbone's name with what differs from the paper's."""
    backbone, args = config["backbone"], config.get("backbone_args") or {}
    paper = paper_backbone_args(config["architecture"])
    if backbone == "wrn34_10":
        name = f"WideResNet-{args.get('depth', paper['depth'])}-{args.get('widen_factor', paper['widen_factor'])}"
    elif {k: v for k, v in args.items() if k in paper} == paper:
        name = BACKBONES[backbone].name
    else:
        (widths, depths), (paper_widths, paper_depths) = _stage_widths(backbone, args), _stage_widths(backbone, paper)
        ratios = {w / p for w, p in zip(widths, paper_widths)}
        if depths == paper_depths and len(ratios) == 1:
            ratio = ratios.pop()
            width = WIDTH_NAMES.get(ratio, f"{ratio:g}x-width")
            name = f"{width} {BACKBONES[backbone].name} (widths {_dashed(widths)})"
        else:
            name = f"{BACKBONES[backbone].name}-like network ({', '.join(t for *_, t in _backbone_deviations(config))})"
    extra = [text for key, _, text in _backbone_deviations(config) if key in ("in_chans", "global_pool")]
    return name + (f" ({', '.join(extra)})" if extra else "")


def _backbone_deviations(config: dict) -> list[tuple[str, str, str]]:
    """(argument, its value as text, sentence) for each architecture argument that differs from the paper's."""
    args = config.get("backbone_args") or {}
    paper = {"in_chans": 3, "global_pool": "avg", **paper_backbone_args(config["architecture"])}
    shown = lambda v: _dashed(v) if isinstance(v, list) else str(v)  # noqa: E731
    return [
        (key, shown(value), f"{key} {shown(value)} (the paper's: {shown(paper.get(key))})")
        for key, value in args.items()
        if value != paper.get(key)
    ]


def run_facts(metrics: dict) -> dict:
    """The run's size: training and validation images, epochs, SGD steps, warm-up, and whether it used only a subset
    of the data set's training images; from metrics.json, or derived from its training config for runs that did not
    record them (CIFAR-10 has 50,000 training images, the shipped sample 1,000; the first `train_limit` are used, the
    last `val_size` of those held out; an epoch is the whole batches)."""
    train = train_config(metrics)
    dataset = train.get("dataset", "cifar10")
    full = DATASETS[dataset].train_images
    available = SAMPLE_SIZES["train"] if str(train.get("data_dir")) == "sample" else full
    used = min(available, train["train_limit"]) if available and train.get("train_limit") else available
    val_images = metrics.get("val_images", train.get("val_size"))
    train_images = metrics.get("train_images", used - val_images if used and val_images is not None else None)
    epochs = metrics.get("epochs", train.get("epochs"))
    batch = train.get("batch_size")
    steps = metrics.get("sgd_steps", epochs * (train_images // batch) if train_images and batch else None)
    return {
        "dataset": dataset,
        "available": available,
        "train_images": train_images,
        "val_images": val_images,
        "epochs": epochs,
        "batch_size": batch,
        "sgd_steps": steps,
        "warmup_epochs": train.get("warmup_epochs", 0),
        "subset": bool(full and train_images is not None and train_images + (val_images or 0) < full),
    }


def deviations(config: dict, metrics: dict) -> list[tuple[str, str]]:
    """How a run differs from the paper's setting of its tag, as (repository-name part, sentence) pairs: network
    widths or depth, FSR settings, a subset of the training data, another eps. The schedule is not among them (a
    short schedule of the paper's recipe is still that recipe, and its card says how short)."""
    out = [(f"{key.replace('_', '')}{value}", text) for key, value, text in _backbone_deviations(config)]
    if config.get("fsr_stages"):
        paper_stages = list(BACKBONES[config["backbone"]].fsr_stages)
        if config["fsr_stages"] != paper_stages:
            stages = ", ".join(map(str, config["fsr_stages"]))
            out.append(
                (
                    f"fsr{_dashed(config['fsr_stages'])}",
                    f"FSR after stages {stages} (the paper's: {', '.join(map(str, paper_stages))})",
                )
            )
        if config.get("fsr_tau", 0.1) != 0.1:
            out.append((f"tau{config['fsr_tau']:g}", f"mask temperature tau {config['fsr_tau']:g} (the paper's: 0.1)"))
        if config.get("fsr_separation") is False:
            out.append(("nosep", "without FSR's Separation stage (the paper's 'w/o Sep' ablation)"))
        if config.get("fsr_recalibration") is False:
            out.append(("norec", "without FSR's Recalibration stage (the paper's 'w/o Rec' ablation)"))
        if config.get("fsr_output", "f_tilde") != "f_tilde":
            out.append(
                (
                    f"out{config['fsr_output'].replace('_', '')}",
                    f"FSR passes on {config['fsr_output']} instead "
                    "of the recalibrated feature (the paper's Table 5 analysis)",
                )
            )
        for key in ("lambda_sep", "lambda_rec"):
            if config.get(key, 1.0) != 1.0:
                out.append((f"{key.replace('ambda_', '')}{config[key]:g}", f"{key} {config[key]:g} (the paper's: 1)"))
    facts = run_facts(metrics)
    if facts["subset"]:
        out.append(
            (
                f"train{facts['train_images']}",
                f"trained on {facts['train_images']:,} of the "
                f"{DATASETS[facts['dataset']].train_images:,} {dataset_name(facts['dataset'])} training images",
            )
        )
    eps = train_config(metrics).get("eps", metrics.get("eps", PAPER_EPS))
    if not is_paper_eps(eps):
        out.append((f"eps{eps * 255:g}", f"trained for eps {eps_text(eps)} (the paper's: 8/255)"))
    return out


def paper_repo_id(config: dict) -> str:
    return f"{HF_ORG}/{config['architecture']}.{config['pretrained_cfg']['tag']}"


def default_repo_id(config: dict, metrics: dict) -> str:
    """`fsr-zoo/<architecture>.<tag>` for a run in the paper's setting of its tag; for any other run the same name
    with its deviations from that setting appended, `.`-separated (e.g.
    `fsr-zoo/resnet18_fsr.at_cifar10.widths16-32-64-128.train250`), so that it never takes a paper tag's name."""
    return ".".join([paper_repo_id(config), *(part for part, _ in deviations(config, metrics))])


def dataset_name(dataset: str) -> str:
    return DATASETS[dataset].name


def eps_text(eps: float) -> str:
    """8/255 for eps 8/255; other values as they are."""
    k = eps * 255
    return f"{round(k)}/255" if math.isclose(k, round(k), abs_tol=1e-6) else f"{eps:g}"


# --- what was measured --------------------------------------------------------------------------------------------


def final_test_report(metrics: dict) -> dict:
    """The training run's final test as an evaluation report: metrics.json's `test`; for a folder written before the
    trainer recorded it so, built from its `natural_acc`, `pgdK_acc` (PGD-K, step eps/10, no random start),
    `test_images` and `eps`."""
    if "test" in metrics:
        return metrics["test"]
    pgd = next(k.removesuffix("_acc") for k in metrics if k.startswith("pgd") and k.endswith("_acc"))
    eps = metrics["eps"]
    train = train_config(metrics)
    return {
        "dataset": train.get("dataset", "cifar10"),
        "images": metrics["test_images"],
        "eps": eps,
        "strong": False,
        "data_source": "sample" if str(train.get("data_dir")) == "sample" else None,
        "accuracy": {"natural": metrics["natural_acc"], pgd: metrics[f"{pgd}_acc"]},
        "settings": {
            "natural": attack_settings("natural", eps, False),
            pgd: pgd_settings(int(pgd.removeprefix("pgd")), eps),
        },
        "ensemble_over": [],
    }


def measured_reports(metrics: dict, robustness: dict | None = None, adaptive: dict | None = None) -> list:
    """The reports a card shows, as (name, report): the run's own final test, the evaluation report in metrics.json if
    there is one, robustness.json and robustness_adaptive.json if there."""
    legacy = all(k in metrics for k in ("natural_acc", "test_images", "eps")) and any(
        k.startswith("pgd") and k.endswith("_acc") for k in metrics
    )
    if "test" not in metrics and not legacy:
        raise ValueError(
            "metrics.json has no measured robustness (no 'test' report): a card needs the final test that "
            "training/train.py writes"
        )
    reports = [("the training run's final test", final_test_report(metrics))]
    if "evaluation" in metrics:
        reports.append(("a later evaluation (metrics.json, evaluation)", metrics["evaluation"]))
    if robustness:
        reports.append((f"the robustness evaluation ({ROBUSTNESS_NAME})", robustness))
    if adaptive:
        reports.append((f"the attacks designed against FSR ({ADAPTIVE_NAME})", adaptive))
    return reports


def card_eval_results(metrics: dict, robustness: dict | None = None, adaptive: dict | None = None) -> list:
    reports = measured_reports(metrics, robustness, adaptive)
    return [result for _, report in reports for result in eval_results(report)]


def largest_report_with(reports: list[dict], attack: str) -> dict | None:
    """Of measured reports, the one with `attack` (e.g. "autoattack") on the most images; None if none has it."""
    return max((r for r in reports if attack in r["accuracy"]), key=lambda r: r["images"], default=None)


def evaluate_command(model: str, report: dict) -> str:
    """The `python -m fsr_models.evaluate` command that measures `report` again."""
    attacks = [a for a in report["accuracy"] if a in ATTACKS]
    source = str(report.get("data_source") or "")
    data_dir = "sample" if source.startswith("sample") else f"<{dataset_name(report['dataset'])} folder>"
    return " ".join(
        [
            f"python -m fsr_models.evaluate {model} --dataset {report['dataset']} --data-dir {data_dir}",
            f"--n {report['images']} --attacks {' '.join(attacks)}",
            *([f"--eps {eps_text(report['eps'])}"] if not is_paper_eps(report["eps"]) else []),
            *(["--strong"] if report.get("strong") else []),
            *(["--sanity"] if sanity_ran(report) else ["--curve"] if "curve" in report else []),
            *([f"--seed {report['seed']}"] if report.get("seed") else []),
            *([f"--twin {twin}"] if (twin := report["settings"].get("transfer_twin", {}).get("transfer_from")) else []),
        ]
    )


def report_lines(title: str, report: dict, model: str, evaluation: bool = True) -> list[str]:
    """One measured report: what and on which images, its accuracy table, the checks that ran with it (an
    `evaluation`, not the training run's final test), and the command that repeats it."""
    starts = "a random start and 5 restarts" if report.get("strong") else "no random start (the paper's protocol)"
    lines = [
        f"{title[0].upper()}{title[1:]}: accuracy (%) on the first {report['images']:,} "
        f"{dataset_name(report['dataset'])} test images, eps {eps_text(report['eps'])} (L-inf), eval mode, PGD "
        f"with step eps/10 and {starts}:",
        "",
        *accuracy_table(report),
        "",
    ]
    lines += adaptive_finding(report)
    if evaluation:
        lines += checks_lines(report)
    unmeasurable = [column_title(a) for a in report["accuracy"] if a not in ATTACKS and "ensemble" not in a]
    lines += [
        f"Measure again: `{evaluate_command(model, report)}`"
        + (f" ({', '.join(unmeasurable)} is not one of its attacks)." if unmeasurable else "."),
        "",
    ]
    return lines


def sanity_ran(report: dict) -> bool:
    """Whether `--sanity` ran with an evaluation (its zero-gradient check is one that only it runs)."""
    return any(c["check"] == ZERO_GRADIENT for c in report.get("sanity_checks", []))


def checks_lines(report: dict) -> list[str]:
    """The checks that ran with an evaluation, each passed or failed, with the verdict; and what was left unchecked
    where `--sanity` did not run."""
    checks = report.get("sanity_checks", [])
    lines = []
    if checks:
        ran = "; ".join(f"{'passed' if c['passed'] else 'FAILED'}: {c['check']}" for c in checks)
        lines.append(f"Checks that ran with this evaluation: {ran}. Verdict: {verdict(checks)}.")
    if not sanity_ran(report):
        lines.append(
            "`--sanity` did not run with it: random restarts, accuracy against eps, zero input gradients, "
            "determinism" + (" and FSR's activity" if report.get("fsr_health") else "") + " were not checked."
        )
    return [" ".join(lines), ""]


def headline_lines(record: Record) -> list[str]:
    """The robustness to quote, the figure a skeptic quotes: the worst case per image over every attack of the
    adaptive evaluation (its adaptive ensemble), beside the paper protocol's PGD-20 of the final test; nothing
    without an adaptive evaluation."""
    worst = record.adaptive["accuracy"].get("adaptive_ensemble") if record.adaptive else None
    if worst is None:
        return []
    test = final_test_report(record.metrics)
    pgd = next((k for k in test["accuracy"] if k.startswith("pgd")), None)
    paper = (
        f"; {100 * test['accuracy'][pgd]:.2f} % under {column_title(pgd)} with the paper's protocol on "
        f"{test['images']:,} test images"
        if pgd
        else ""
    )
    return [
        f"**Robustness to quote: {100 * worst:.2f} %** under every attack of its adaptive evaluation together (per "
        f"image, the worst case over {_and([column_title(a) for a in record.adaptive['accuracy'] if a in ATTACKS])}; "
        f"first {record.adaptive['images']:,} test images){paper}.",
        "",
    ]


def adaptive_finding(report: dict) -> list[str]:
    """Said plainly: whether the adaptive attacks (those designed against FSR; for a plain network, the feature-space
    attack and the transfer from its FSR twin) find more than the PGD-20 of the same report."""
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
        text = f"**The adaptive attacks find more than PGD-20**: {figures}. PGD-20 overstates its robustness."
    else:
        text = f"The adaptive attacks find no more than PGD-20 on these images: {figures}."
    return [text, "", *found_lines(report)]


def found_lines(report: dict) -> list[str]:
    """Per attack, the images it fools that the report's PGD-20 leaves standing, and each candidate's accuracy of the
    attacks that try several (temperatures, losses, starting points)."""
    found, candidates = report.get("found_beyond_pgd20"), report.get("candidates") or {}
    lines = []
    if found:
        counts = [f"{column_title(a)} {n}" for a, n in found.items() if a in ATTACKS]
        lines += [
            f"What each attack finds beyond PGD-20 (images it fools that PGD-20 leaves standing, of "
            f"{report['images']:,}): {', '.join(counts)}.",
            "",
        ]
    if candidates:
        lines += ["| attack | candidate | accuracy (%) |", "| --- | --- | --- |"]
        lines += [
            f"| {column_title(attack)} | {label} | {100 * value:.2f} |"
            for attack, by_label in candidates.items()
            for label, value in by_label.items()
        ]
        softened = any(label.startswith("T=") for by_label in candidates.values() for label in by_label)
        lines += [
            "",
            "Each candidate alone, before the per-image worst case with PGD-20 that the attack's column shows"
            + (" (T: the factor by which the mask's temperature is raised for the gradient)." if softened else "."),
            "",
        ]
    return lines


def attack_notes(reports: list[dict]) -> list[str]:
    shown = {a for report in reports for a in report["accuracy"]}
    notes = list(dict.fromkeys(note for attack, note in ATTACK_NOTES.items() if attack in shown))
    return [" ".join(notes), ""] if notes else []


def curve_lines(robustness: dict, image: str | None) -> list[str]:
    """The robustness curve: the plot (when there is one) and its numbers."""
    curve = robustness["curve"]
    lines = [f"![Accuracy against eps]({image})", ""] if image else []
    return lines + [
        f"Accuracy (%) against eps, {curve['attack']}, on the first {curve['images']:,} "
        f"{dataset_name(robustness['dataset'])} test images:",
        "",
        *curve_table(curve),
        "",
    ]


def health_lines(record: Record) -> list[str]:
    """FSR's health figures with a plain warning when part of FSR is dead; robustness.json's, else metrics.json's."""
    if record.robustness and record.robustness.get("fsr_health"):
        health, images = record.robustness["fsr_health"], record.robustness["images"]
    elif record.metrics.get("fsr_health"):
        health, images = record.metrics["fsr_health"], final_test_report(record.metrics)["images"]
    else:
        return [
            "No FSR health figures were recorded with these weights (training/train.py and `python -m "
            "fsr_models.evaluate` record them).",
            "",
        ]
    lines = [
        f"How alive each FSR module is on the first {images:,} test images, with these weights: R contribution "
        "is |(1 - m) R(f-)| / |f-|, the size of what the Recalibration Net adds to f- relative to f-; 'units live' "
        "is the share of hidden channels after each BN + ReLU of the Separation (S) and Recalibration (R) "
        "Nets that are positive for some image; m is the separation mask.",
        "",
        *health_table(health),
        "",
    ]
    problems = fsr_health_problems(health)
    if problems:
        lines += ["**Warning: part of FSR is dead in these weights.**", "", *(f"- {p}" for p in problems), ""]
        if any(h.get("r_contribution", 1.0) < R_CONTRIBUTION_MIN for h in health.values()):
            lines += [
                "So this model is in effect FSR without Recalibration (the paper's 'w/o Rec' ablation), not "
                "the paper's FSR, until it is retrained.",
                "",
            ]
    return lines


def figure_lines(image: str) -> list[str]:
    """The paper's Figure 1 for this model: what its columns show."""
    return [
        f"![Grad-CAM maps of FSR's features]({image})",
        "",
        "Per test image: the image, its PGD-20 adversarial version, and Grad-CAM maps (for the true class) of FSR's "
        "robust feature f+, non-robust feature f- and recalibrated non-robust feature f~- on the adversarial image, "
        "with a plain network's final feature f on the clean image where a column shows it. Identical f- and f~- maps "
        "mean the Recalibration Net contributes nothing. Drawn by `python -m fsr_models.visualize`.",
        "",
    ]


def comparison_lines(
    this: str,
    metrics: dict,
    other: str,
    other_metrics: dict,
    robustness: tuple[dict | None, dict | None] = (None, None),
) -> list[str]:
    """The measured side-by-side of two zoo models (the same network with and without FSR, same tag), with who is
    ahead on each measure and how their training differed; `robustness`, the two models' robustness.json, where
    their AutoAttack reports may be."""
    rows = {this: metrics, other: other_metrics}
    tests = {name: final_test_report(m) for name, m in rows.items()}
    columns = []  # (title, {name: accuracy})
    if tests[this]["images"] == tests[other]["images"]:
        for key in tests[this]["accuracy"]:
            if key in tests[other]["accuracy"]:
                columns.append(
                    (
                        f"{column_title(key)} ({tests[this]['images']:,})",
                        {n: t["accuracy"][key] for n, t in tests.items()},
                    )
                )
    evaluations = {
        name: largest_report_with([r for r in (m.get("evaluation"), extra) if r], "autoattack")
        for (name, m), extra in zip(rows.items(), robustness)
    }
    if all(evaluations.values()) and evaluations[this]["images"] == evaluations[other]["images"]:
        for key in ("autoattack",):
            if all(key in e["accuracy"] for e in evaluations.values()):
                columns.append(
                    (
                        f"{column_title(key)} (first {evaluations[this]['images']:,})",
                        {n: e["accuracy"][key] for n, e in evaluations.items()},
                    )
                )
    lines = [
        "| model | epochs | " + " | ".join(title for title, _ in columns) + " |",
        "| --- " * (len(columns) + 2) + "|",
    ]
    lines += [
        f"| {name} | {m['epochs']} | " + " | ".join(f"{100 * values[name]:.2f}" for _, values in columns) + " |"
        for name, m in rows.items()
    ]
    ahead = {this: [], other: []}
    for title, values in columns:
        diff = 100 * (values[this] - values[other])
        if round(diff, 2):
            ahead[this if diff > 0 else other].append(f"{title.split(' (')[0]} (+{abs(diff):.2f} points)")
    said = [f"`{name}` is ahead on {_and(leads)}" for name, leads in ahead.items() if leads]
    lines += ["", ("; ".join(said) if said else "The two are equal on every measure") + "."]
    # the epochs each run trained (a time budget fits them after the first epoch), not those its config planned
    train = {**train_config(metrics), "epochs": metrics["epochs"]}
    other_train = {**train_config(other_metrics), "epochs": other_metrics["epochs"]}
    differ = [
        k
        for k in sorted(set(train) | set(other_train))
        if k not in RUN_ONLY_SETTINGS and train.get(k) != other_train.get(k)
    ]
    same = (
        "Both were trained with the same config apart from the network"
        if not differ
        else "Their training configs differ in "
        + ", ".join(f"{k} ({train.get(k)} vs {other_train.get(k)})" for k in differ)
        + ": they were trained with different recipes, so this comparison does not say whether FSR helps or hurts"
    )
    if metrics["epochs"] != other_metrics["epochs"] and train.get("time_budget_min") and not differ:
        same += (
            f"; the {train['time_budget_min']:g}-minute budget fitted {metrics['epochs']} epochs to `{this}` and "
            f"{other_metrics['epochs']} to `{other}`"
        )
    return lines + ["", same + ".", ""]


def _and(items: list[str]) -> str:
    return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else items[0]


# --- the card -----------------------------------------------------------------------------------------------------


def model_card(record: Record, repo_id: str) -> ModelCard:
    """The card of one Hub repository: metadata (with model-index results) and the prose a user needs."""
    dataset = train_config(record.metrics).get("dataset", "cifar10")
    hub_dataset = DATASETS[dataset].hub_id
    data = ModelCardData(
        library_name="timm",
        license="mit",
        pipeline_tag="image-classification",
        datasets=[hub_dataset],
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
        eval_results=card_eval_results(record.metrics, record.robustness, record.adaptive),
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{_body(record, repo_id, dataset)}")


def _body(record: Record, repo_id: str, dataset: str) -> str:
    config, metrics = record.config, record.metrics
    arch, tag = config["architecture"], config.get("pretrained_cfg", {}).get("tag", "")
    facts, name = run_facts(metrics), dataset_name(dataset)
    fsr = config.get("fsr_stages") or []
    _, height, width = config["pretrained_cfg"]["input_size"]
    size = f"{height}x{width}"
    where = (
        (
            f"with a Feature Separation and Recalibration (FSR) module after stage {', '.join(map(str, fsr))} of the "
            f"backbone (Kim et al., CVPR 2023)"
        )
        if fsr
        else "without FSR (the baseline of the FSR paper)"
    )
    trained_on = f" on {facts['train_images']:,} training images" if facts["train_images"] else ""
    natural = train_config(metrics).get("method") == "natural"
    trained = (
        f"trained{trained_on} without adversarial examples, measured against"
        if natural
        else f"adversarially trained{trained_on} to resist"
    )
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A {network_name(config)} image classifier for {name} ({config['num_classes']} classes, {size} inputs "
        f"in [0, 1], no normalisation) {where}, {trained} L-inf attacks of eps {eps_text(metrics['eps'])}. Part "
        f"of the fsr-zoo model zoo: `timm` architecture `{arch}`, tag `{tag}`.",
        "",
    ]
    differs = deviations(config, metrics)
    if differs:
        lines += [f"**Not the paper's setting of `{arch}.{tag}`:**", "", *(f"- {text}" for _, text in differs), ""]
    lines += headline_lines(record)
    if fsr:
        heads = (
            f"; the trained ones are in `{FSR_HEADS_NAME}`, for fine-tuning (`fsr_models.hub.load_fsr_heads`)"
            if record.fsr_heads
            else ""
        )
        lines += [
            "FSR splits the feature map with a learned mask into robust and non-robust activations "
            "(Separation) and adjusts the non-robust ones to carry useful cues again (Recalibration); the "
            "sum replaces the feature map. The auxiliary heads that train the mask are not part of the "
            f"network: only the training losses use them{heads}.",
            "",
        ]
    lines += _training_lines(metrics, facts, name, bool(fsr))

    reports = measured_reports(metrics, record.robustness, record.adaptive)
    lines += ["## Evaluation", ""]
    for i, (title, report) in enumerate(reports):
        lines += report_lines(title, report, f"hf-hub:{repo_id}", evaluation=i > 0)
    lines += attack_notes([report for _, report in reports])
    lines += ["Each metric's settings are in this card's metadata.", ""]
    if record.curve_report:
        image = CURVE_NAME if record.curve_png else None
        lines += ["## Robustness curve", "", *curve_lines(record.curve_report, image)]
    if fsr:
        lines += ["## FSR health", "", *health_lines(record)]
    if fsr and record.figure_png:
        lines += ["## What FSR does under attack (the paper's Figure 1)", "", *figure_lines(FIGURE_NAME)]
    if record.comparison:
        other = record.comparison["model"]
        lines += [
            f"## Compared with {'the plain baseline' if fsr else 'the same network with FSR'}",
            "",
            f"Measured the same way, the zoo's `{other}` ({'without' if fsr else 'with'} FSR) beside this model "
            f"(accuracy %, eps {eps_text(metrics['eps'])}; test images in brackets):",
            "",
            *comparison_lines(
                record.name,
                metrics,
                other,
                record.comparison["metrics"],
                (record.robustness, record.comparison.get("robustness")),
            ),
        ]

    lines += use_lines(repo_id, config["pretrained_cfg"]["input_size"])
    lines += limits_lines(name, metrics["eps"], size)
    lines += ["## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)


def use_lines(repo_id: str, input_size) -> list[str]:
    """How a repository's model loads, in timm, transformers and with its own code."""
    channels, height, width = input_size
    return [
        "## Use",
        "",
        "```python",
        "import fsr_models  # registers the architectures with timm and transformers",
        "import timm",
        "",
        f"model = timm.create_model('hf-hub:{repo_id}', pretrained=True).eval()",
        f"logits = model(images)  # images: float tensor (N, {channels}, {height}, {width}) in [0, 1]",
        "",
        "from transformers import AutoModelForImageClassification, pipeline",
        "",
        f"model = AutoModelForImageClassification.from_pretrained('{repo_id}')",
        "logits = model(pixel_values=images).logits",
        f"classify = pipeline('image-classification', model='{repo_id}')  # PIL images in, label names out",
        "",
        "# Without fsr-zoo (torch and transformers only), the repository's own code gives the same logits:",
        f"model = AutoModelForImageClassification.from_pretrained('{repo_id}', trust_remote_code=True)",
        "```",
        "",
    ]


def limits_lines(name: str, eps: float, size: str) -> list[str]:
    return [
        "## Intended use and limits",
        "",
        f"A research checkpoint for studying adversarial robustness on {name}. Its robustness holds "
        f"only in the threat model it was trained and measured for: L-inf perturbations of at most "
        f"{eps_text(eps)} on {name}-like {size} images. It is not certified, it says nothing about "
        "other norms, larger budgets, patches, corruptions or other data, and stronger or adaptive attacks may "
        "lower the figures above. Inputs must be [0, 1] pixels without normalisation (the repository's image "
        "processor does that for the pipeline).",
        "",
    ]


def schedule_text(metrics: dict, facts: dict) -> str:
    """'32 epochs (3,040 SGD steps of batch 512), no warm-up, lr x0.1 after epoch 24, then x0.1 after epoch 29'."""
    train = train_config(metrics)
    epochs = facts["epochs"]
    steps = f" ({facts['sgd_steps']:,} SGD steps of batch {facts['batch_size']})" if facts["sgd_steps"] else ""
    warmup = (
        f"a linear learning-rate warm-up over {facts['warmup_epochs']:g} epochs"
        if facts["warmup_epochs"]
        else "no warm-up"
    )
    if metrics.get("extensions"):
        drops = f"at {', '.join(f'{100 * f:g}%' for f in train['lr_milestones'])} of the planned epochs"
        drops += "; extended " + ", ".join(
            f"after epoch {e['after_epoch']} from {e['from']} to {e['to']} epochs (lr: {e['lr']})"
            for e in metrics["extensions"]
        )
        return f"{epochs} epochs{steps}, {warmup}, lr x{train['lr_gamma']:g} {drops}"
    after = Counter(m for m in milestone_epochs(train["lr_milestones"], epochs) if m < epochs)
    drops = ", then ".join(f"x{train['lr_gamma'] ** k:g} after epoch {m}" for m, k in sorted(after.items()))
    return f"{epochs} epochs{steps}, {warmup}, lr {drops or 'constant (its drops fall after the last epoch)'}"


def _training_lines(metrics: dict, facts: dict, name: str, fsr: bool) -> list[str]:
    train = train_config(metrics) or None
    lines = ["## Training", ""]
    if train is None:
        return lines + ["No training config was recorded with these weights.", ""]
    epochs = facts["epochs"]
    method = METHOD_NAMES.get(train["method"], train["method"])
    if train["method"] in ("trades", "mart"):
        method += f" (beta {train['beta']:g})"
    if epochs < PAPER_EPOCHS:
        lines += [
            f"**Short schedule: {epochs} epochs, not the paper's {PAPER_EPOCHS}-epoch recipe.** Expect "
            "lower accuracy than the paper reports.",
            "",
        ]
    lr = scaled_lr(train["lr_per_128"], train["batch_size"])
    sample = " in the shipped sample" if str(train.get("data_dir")) == "sample" else ""
    subset = f" (of {facts['available']:,}{sample})" if facts["subset"] and facts["available"] else ""
    budget = f", in a {train['time_budget_min']:g}-minute budget" if train.get("time_budget_min") else ""
    lines += [
        f"- Data: {facts['train_images']:,} {name} training images{subset}; {facts['val_images']:,} more held out "
        "for validation (the saved weights are those of the best epoch by PGD accuracy on them); augmentation "
        f"{'pad-4 crop + flip' if train['augment'] else 'none'}",
        f"- Method: {method}"
        + (f" + FSR losses (lambda_sep {train['lambda_sep']:g}, lambda_rec {train['lambda_rec']:g})" if fsr else ""),
        f"- Attack during training: PGD-{train['attack_steps']}, eps {eps_text(train['eps'])}, step "
        f"{eps_text(train['attack_step_size'])}, {'a' if train['random_start'] else 'no'} random start",
        f"- Schedule: {schedule_text(metrics, facts)}{budget}; best epoch {metrics.get('best_epoch', '?')}",
        f"- Optimiser: SGD lr {lr:g} ({train['lr_per_128']:g} per 128 images, scaled to the batch of "
        f"{train['batch_size']}; momentum {train['momentum']:g}, weight decay {train['weight_decay']:g}), "
        f"{train['precision']}",
        *([f"- Training time: {metrics['train_seconds']:.0f} s"] if "train_seconds" in metrics else []),
        "",
        "The full config is `train_config.yaml` in this repository; with the fsr-zoo code, "
        f"`python training/train.py --config train_config.yaml --set data_dir=<{name} folder> "
        "output_dir=<new folder>"
        + (f" epochs={epochs} time_budget_min=null" if train.get("time_budget_min") else "")
        + "` repeats the run.",
        "",
    ]
    return lines
