"""What was measured of a model, as a card's Markdown: each report, what the adaptive attacks found, FSR's health,
and two models side by side."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from fsr_models.evaluation.checks import ZERO_GRADIENT, verdict
from fsr_models.evaluation.protocol import ADAPTIVE, ATTACKS
from fsr_models.evaluation.report import (
    accuracy_table,
    attack_notes,
    column_title,
    curve_table,
    eps_text,
    health_table,
    interval_95,
    joined,
)
from fsr_models.facts.datasets import DATASETS
from fsr_models.facts.networks import HF_ORG, twin_name
from fsr_models.facts.paper import is_paper_eps
from fsr_models.fsr import R_CONTRIBUTION_MIN, fsr_health_problems
from fsr_models.hub.records import CURVE_NAME, FIGURE_NAME, Record
from fsr_models.training.config import RESUME_MAY_CHANGE, TrainConfig

# What a run's place and plumbing were, not what it trained: left out when two runs' recipes are compared
RUN_ONLY_SETTINGS = {"model", *RESUME_MAY_CHANGE}
# The settings a recorded config may lack (written before they existed) at the value such a run ran with
TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


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
    """Two zoo models measured side by side (the same network with and without FSR, same tag): the final tests, and
    the largest AutoAttack and adaptive reports where both have them on as many images (the adaptive ensemble: each
    model's worst case over the attacks that apply to it), who is ahead, how their training differed."""
    columns = []  # (title, (this value, other value), images)
    tests = (this.metrics["test"], other.metrics["test"])
    if tests[0]["images"] == tests[1]["images"]:
        for key in (k for k in tests[0]["accuracy"] if k in tests[1]["accuracy"]):
            title = f"{column_title(key)} ({tests[0]['images']:,})"
            columns.append((title, [t["accuracy"][key] for t in tests], tests[0]["images"]))
    for attack in ("autoattack", "adaptive_ensemble"):  # the largest reports of each, where both measured as many
        reports = (this.largest_with(attack), other.largest_with(attack))
        if all(reports) and reports[0]["images"] == reports[1]["images"]:
            title = f"{column_title(attack)} (first {reports[0]['images']:,})"
            columns.append((title, [r["accuracy"][attack] for r in reports], reports[0]["images"]))
    lines = ["| model | epochs | " + " | ".join(t for t, *_ in columns) + " |", "| --- " * (len(columns) + 2) + "|"]
    for i, record in enumerate((this, other)):
        values = " | ".join(f"{100 * v[i]:.2f} ± {100 * interval_95(v[i], n):.2f}" for _, v, n in columns)
        lines.append(f"| {record.name} | {record.metrics['epochs']} | {values} |")
    ahead, beyond = {this.name: [], other.name: []}, []
    for title, (mine, theirs), images in columns:
        measure = title.split(" (")[0]
        # the 95% interval of the difference of two accuracies on that many images each
        half = 100 * math.hypot(interval_95(mine, images), interval_95(theirs, images))
        if diff := round(100 * (mine - theirs), 2):
            ahead[this.name if diff > 0 else other.name].append(f"{measure} (+{abs(diff):.2f} ± {half:.2f} points)")
            beyond += [measure] if abs(diff) > half else []
    said = [f"`{name}` is ahead on {joined(leads)}" for name, leads in ahead.items() if leads]
    lines += ["", ("; ".join(said) if said else "The two are equal on every measure") + "."]
    if said:  # what a difference of that size on that many images says
        lines[-1] += (
            f" Beyond the 95% interval of the difference: {joined(beyond)}."
            if beyond
            else " Every difference is within its 95% interval."
        )
        lines[-1] += (
            " (The intervals treat the two measurements as independent; both were made on the same images, so they "
            "are wider than a paired comparison's.)"
        )
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
