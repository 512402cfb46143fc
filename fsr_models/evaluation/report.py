"""The evaluation report as Markdown tables and as the Hub's model-card metadata (eval results, model-index)."""

from __future__ import annotations

from huggingface_hub import EvalResult
from huggingface_hub.repocard_data import eval_results_to_model_index

from fsr_models.evaluation.protocol import SURROGATE_TEMPERATURES, attack_settings
from fsr_models.facts.datasets import DATASETS
from fsr_models.facts.paper import PAPER_EPS, is_paper_eps

COLUMNS = {  # report key -> column title, in the paper's order
    "natural": "Natural",
    "fgsm": "FGSM",
    "pgd20": "PGD-20",
    "pgd100": "PGD-100",
    "cw": "C&W",
    "ensemble": "Ensemble",
    "autoattack": "AutoAttack",
    "apgd_ce": "APGD-CE",
    "ti_fgsm": "TI-FGSM",
    "di_fgsm": "DI-FGSM",
    "nattack": "NAttack",
    "mask_surrogate": "Mask surrogate",
    "mask_surrogate_apgd": "Mask surrogate APGD",
    "feature_space": "Feature space",
    "transfer_twin": "Transfer from twin",
    "transfer_without_rec": "Transfer from w/o Rec",
    "defense_masks": "CAS/CIFS masks",
    "adaptive_ensemble": "Adaptive ensemble",
}
_CW = attack_settings("cw", PAPER_EPS, strong=False)


def joined(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else items[0]


_SOFTENED = joined([f"{t:g}x" for t in SURROGATE_TEMPERATURES])
MASK_NOTE = (
    "Mask surrogate: PGD-20 on cross-entropy and on the C&W margin whose gradients go through FSR's mask softened "
    f"{_SOFTENED} (BPDA; the forward is the model's own); Mask surrogate APGD: AutoAttack's APGD-CE and "
    "APGD-DLR through the same softened masks."
)
TRANSFER_NOTE = "TI-FGSM and DI-FGSM are transfer attacks, crafted on the model named in their settings."
ATTACK_NOTES = {  # what an attack is, said once under the tables where it appears
    "cw": f"C&W is PGD-{_CW['steps']} on the C&W margin loss (kappa {_CW['kappa']:g}).",
    "autoattack": "AutoAttack is the standard version of the reference code (pyautoattack).",
    "ensemble": "Ensemble counts an image only if it is classified correctly clean and under each of FGSM, PGD-20, "
    "PGD-100 and C&W that its table shows (the paper's set: AutoAttack, APGD-CE and the other attacks are not part "
    "of it, so AutoAttack may be below it).",
    "ti_fgsm": TRANSFER_NOTE,
    "di_fgsm": TRANSFER_NOTE,
    "nattack": "NAttack is a query-based black-box attack (Li et al. 2019).",
    "apgd_ce": "APGD-CE is AutoAttack's first attack alone (reference code, 100 iterations, 1 restart).",
    "mask_surrogate": MASK_NOTE,
    "mask_surrogate_apgd": MASK_NOTE,
    "feature_space": "Feature space: PGD moving the network's last feature map (the one FSR passes on, in an FSR "
    "network) towards that of the nearest image of another class, then PGD-20 from there.",
    "transfer_twin": "Transfer from twin: PGD-20 crafted on the zoo's same network with FSR, or without it for an "
    "FSR, CAS, CIFS or Feature Denoising model.",
    "transfer_without_rec": "Transfer from w/o Rec: PGD-20 crafted on this model's own w/o Rec ablation (FSR "
    "passing on f+ only).",
    "defense_masks": "CAS/CIFS masks: PGD-20 on CAS's or CIFS's joint loss (beta 2), with every mask fixed to the "
    "true class's, towards the likeliest wrong class with every mask fixed to that class's, on the auxiliary heads "
    "first (moving the masks) then cross-entropy, and for CIFS through its relevance map (the gradient its authors' "
    "detach hides).",
    "adaptive_ensemble": "Each adaptive attack keeps, per image, the worst case with PGD-20; the adaptive ensemble "
    "counts an image only if it withstands every attack of its table.",
}


def make_report(
    model: str,
    dataset: str,
    data_source: str,
    images: int,
    eps: float,
    strong: bool,
    result: dict,
    source: str | None = None,
) -> dict:
    """The evaluation report, in the one format of `python -m fsr_models.evaluate` (report.json, robustness.json) and
    of the trainer's final test (metrics.json's `test`): what was attacked, on which images, and `result` (accuracy,
    settings, ensemble_over, seconds) of `evaluate_attacks`; where they are not empty, AutoAttack's warnings, the
    accuracy under each candidate of the adaptive attacks (`candidates`) and the number of images each attack fools
    that PGD-20 leaves standing (`found_beyond_pgd20`)."""
    return {
        "model": model,
        "dataset": dataset,
        "data_source": data_source,
        "indices": f"0:{images}",
        "images": images,
        "eps": eps,
        "strong": strong,
        "accuracy": result["accuracy"],
        "settings": result["settings"],
        "ensemble_over": result["ensemble_over"],
        "seconds": result["seconds"],
        "source": source,
    } | {key: result[key] for key in ("autoattack_warnings", "candidates", "found_beyond_pgd20") if result.get(key)}


def interval_95(accuracy: float, images: int) -> float:
    """The half-width of the 95% interval of an accuracy measured on `images` images: 1.96 sqrt(p (1 - p) / n), the
    normal approximation to the binomial (what separates two models measured on that many images)."""
    return 1.96 * (accuracy * (1 - accuracy) / images) ** 0.5


def eps_text(eps: float) -> str:
    """8/255 for eps 8/255; other values as they are."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:g}"


def column_title(name: str) -> str:
    """'pgd20' -> 'PGD-20'; also names the PGD-k of a training run's final test (any k)."""
    return COLUMNS.get(name) or f"PGD-{name.removeprefix('pgd')}"


def eval_results(report: dict) -> list[EvalResult]:
    """The report as Hub eval results (model-card metadata): one accuracy per attack, with its settings."""
    data = DATASETS[report["dataset"]]
    return [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=data.hub_id,
            dataset_name=data.name,
            dataset_split=f"{data.test_split}[:{report['images']}]",
            metric_type="accuracy",
            metric_name=f"{column_title(n)} accuracy",
            metric_value=round(100 * v, 2),
            metric_args=report["settings"].get(n, {"over": report["ensemble_over"]}),
        )
        for n, v in report["accuracy"].items()
    ]


def model_index(report: dict, model_name: str) -> list[dict]:
    """The report as the Hub's model-index metadata."""
    return eval_results_to_model_index(model_name, eval_results(report))


def accuracy_table(report: dict, row_label: str | None = None) -> list[str]:
    """The report's accuracies (%) as a Markdown table in the paper's column order, with an optional label column."""
    accuracy = report["accuracy"]
    cols = [n for n in COLUMNS if n in accuracy] + [n for n in accuracy if n not in COLUMNS]
    label = [] if row_label is None else [("model", row_label)]
    header = [title for title, _ in label] + [column_title(n) for n in cols]
    values = [value for _, value in label] + [f"{100 * accuracy[n]:.2f}" for n in cols]
    return [f"| {' | '.join(header)} |", "| --- " * len(header) + "|", f"| {' | '.join(values)} |"]


def protocol_text(report: dict) -> str:
    if report["strong"]:
        return "strong protocol (random start, 5 restarts)"
    if is_paper_eps(report["eps"]):
        return "paper protocol"
    return "the paper's attacks at another eps than its 8/255"


def health_table(health: dict) -> list[str]:
    """fsr_health's figures per FSR module as a Markdown table."""
    pct = lambda h, key: f"{100 * h[key]:.0f}" if key in h else "-"  # noqa: E731
    lines = [
        "| FSR module | R contribution | S units live (%, ReLU 1 / 2) | R units live (%, ReLU 1 / 2) | mask mean "
        "| mask > 0.99 (%) | mask < 0.01 (%) |",
        "| --- " * 7 + "|",
    ]
    for name, h in health.items():
        r = f"{h['r_contribution']:.3g}" if "r_contribution" in h else "-"
        mask = f"{h['mask_mean']:.3f}" if "mask_mean" in h else "-"
        lines.append(
            f"| {name} | {r} | {pct(h, 's_live_1')} / {pct(h, 's_live_2')} | {pct(h, 'r_live_1')} / "
            f"{pct(h, 'r_live_2')} | {mask} | {pct(h, 'mask_above_0.99')} | {pct(h, 'mask_below_0.01')} |"
        )
    return lines


def curve_table(curve: dict) -> list[str]:
    """The robustness curve as a Markdown table: eps in /255 against accuracy (%), as every table here writes it."""
    return [
        "| eps (/255) | " + " | ".join(f"{e * 255:g}" for e in curve["eps"]) + " |",
        "| --- " * (len(curve["eps"]) + 1) + "|",
        "| accuracy | " + " | ".join(f"{100 * a:.2f}" for a in curve["accuracy"]) + " |",
    ]


def attack_notes(reports) -> str:
    """The notes on the attacks that the reports' tables show, each once."""
    shown = {attack for report in reports for attack in report["accuracy"]}
    return " ".join(dict.fromkeys(note for attack, note in ATTACK_NOTES.items() if attack in shown))


def detail_text(detail) -> str:
    """A sanity check's figures as a reader takes them: accuracies and shares in %, two decimals."""
    if isinstance(detail, list):
        return "; ".join(detail)
    if isinstance(detail, dict):
        return ", ".join(f"{k} {detail_text(v)}" for k, v in detail.items())
    if isinstance(detail, float):
        return f"{100 * detail:.2f}%"
    return "" if detail is None else str(detail)


def source_words(data_source: str) -> str:
    """Where the images came from, as the report's sentence says it: 'the sample shipped with fsr-zoo', 'a local
    data folder'."""
    if data_source.startswith("sample"):
        return "the sample shipped with fsr-zoo"
    return "a local data folder" if data_source.endswith("of a local data folder") else data_source


def markdown(report: dict) -> str:
    lines = accuracy_table(report, row_label=report["model"])
    lines.append(
        f"\nAccuracy (%) on the first {report['images']:,} {DATASETS[report['dataset']].name} test images "
        f"({source_words(report['data_source'])}), eps {eps_text(report['eps'])} (L-inf), {protocol_text(report)}; "
        f"an image counts as robust only if it is also classified correctly clean. {attack_notes([report])}".rstrip()
    )
    if report.get("not_run"):
        lines.append(
            "\nNot run: "
            + "; ".join(f"{name} ({why})" for name, why in report["not_run"].items())
            + ". The adaptive ensemble is over the attacks that ran."
        )
    if "curve" in report:
        c = report["curve"]
        lines += [
            "",
            f"Robustness curve ({c['attack']}, {c['images']} images), accuracy (%):",
            "",
            *curve_table(c),
        ]
    if "fsr_health" in report:
        lines += [
            "",
            "FSR health on the clean images (`fsr_models.fsr.fsr_health`):",
            "",
            *health_table(report["fsr_health"]),
        ]
    if "features" in report:
        lines += [
            "",
            "FSR feature analysis (paper Table 5): accuracy (%) when FSR passes on each feature; k-NN "
            "accuracy of PGD-20 features among clean training features:",
            "",
            "| FSR output | Natural | PGD-20 | 5-NN | 20-NN |",
            "| --- " * 5 + "|",
        ]
        keys = ("natural", "pgd20", "knn5", "knn20")
        lines += [
            f"| {name} | " + " | ".join(f"{100 * v[k]:.2f}" for k in keys) + " |"
            for name, v in report["features"].items()
        ]
    if report.get("sanity_checks"):
        lines.append("")
    for c in report.get("sanity_checks", []):
        detail = detail_text(c["detail"])
        detail = f" ({detail})" if detail else ""
        flags = "".join(f"; AutoAttack flag: {flag}" for flag in c.get("autoattack_flags", []))
        lines.append(f"- {'PASS' if c['passed'] else 'FAIL'}: {c['check']}{detail}{flags}")
    if "verdict" in report:
        lines.append(f"\nVerdict: {report['verdict']}.")
    return "\n".join(lines) + "\n"
