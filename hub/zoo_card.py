#!/usr/bin/env python3
"""Write MODEL_CARD.md, the zoo's card, from what exists: the registered models, hub/weights/<model>.<tag>/
(metrics.json and, where there, robustness.json and robustness_curve.png: every measured number) and the paper's
tables (quoted, and marked as the paper's); results/zoo_robustness.csv, the zoo's results table (every measured
report of every trained model, one row each); results/robustbench/<model>.json, each trained model's entry in
RobustBench's model_info format; and each hub/weights folder's preprocessor_config.json, the image processor its
config.json gives (the same code writes it into every saved folder).

    python hub/zoo_card.py            # rewrite MODEL_CARD.md, the results and the folders' preprocessor_config.json
    python hub/zoo_card.py --check    # exit 1 if any of them is not what the current files give
"""

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import timm

import fsr_models
from fsr_models.card import (
    CITATION,
    CURVE_NAME,
    FIGURE_NAME,
    METHOD_NAMES,
    Record,
    attack_notes,
    comparison_lines,
    curve_lines,
    dataset_name,
    deviations,
    eps_text,
    figure_lines,
    final_test_report,
    health_lines,
    measured_reports,
    network_name,
    read_record,
    report_lines,
    run_facts,
    schedule_text,
)
from fsr_models.evaluation.report import COLUMNS, column_title
from fsr_models.facts import HF_ORG, PAPER_EPOCHS
from fsr_models.hub import IMAGE_PROCESSOR_NAME, image_processor_config

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "MODEL_CARD.md"
RESULTS = ROOT / "results" / "zoo_robustness.csv"
ROBUSTBENCH = ROOT / "results" / "robustbench"
ROBUSTBENCH_ARCHITECTURES = {"resnet18": "ResNet-18", "vgg16": "VGG-16 (BN)", "wrn34_10": "WideResNet-34-10"}
RESULT_COLUMNS = tuple(COLUMNS)  # every attack a report may hold, in the paper's column order
WEIGHTS = ROOT / "hub" / "weights"
# The paper's accuracies (%): natural, PGD-20, AutoAttack (None: not reported). ResNet-18: Table 1 (CIFAR-10 and
# SVHN) and Table 3 (AutoAttack, CIFAR-10); VGG16: Table 2. WRN-34-10, CIFAR-100 and Tiny ImageNet are in the
# supplementary material, which this repository does not have.
PAPER = {
    ("resnet18_plain", "at_cifar10"): (85.02, 48.22, 44.11),
    ("resnet18_fsr", "at_cifar10"): (81.46, 52.47, 46.41),
    ("resnet18_plain", "trades_cifar10"): (86.31, 50.74, 46.81),
    ("resnet18_fsr", "trades_cifar10"): (84.49, 52.27, 48.45),
    ("resnet18_plain", "mart_cifar10"): (82.73, 50.88, 44.27),
    ("resnet18_fsr", "mart_cifar10"): (83.28, 54.80, 46.55),
    ("resnet18_plain", "at_svhn"): (91.21, 40.85, None),
    ("resnet18_fsr", "at_svhn"): (91.28, 43.94, None),
    ("resnet18_plain", "trades_svhn"): (90.99, 47.12, None),
    ("resnet18_fsr", "trades_svhn"): (91.39, 51.49, None),
    ("resnet18_plain", "mart_svhn"): (90.50, 43.61, None),
    ("resnet18_fsr", "mart_svhn"): (89.87, 46.51, None),
    ("vgg16_plain", "at_cifar10"): (80.56, 47.17, None),
    ("vgg16_fsr", "at_cifar10"): (80.06, 49.82, None),
    ("vgg16_plain", "trades_cifar10"): (82.44, 47.39, None),
    ("vgg16_fsr", "trades_cifar10"): (80.78, 49.95, None),
    ("vgg16_plain", "mart_cifar10"): (76.11, 51.06, None),
    ("vgg16_fsr", "mart_cifar10"): (79.18, 52.69, None),
    ("vgg16_plain", "at_svhn"): (89.59, 40.27, None),
    ("vgg16_fsr", "at_svhn"): (91.44, 45.99, None),
    ("vgg16_plain", "trades_svhn"): (90.48, 45.99, None),
    ("vgg16_fsr", "trades_svhn"): (91.89, 54.56, None),
    ("vgg16_plain", "mart_svhn"): (89.95, 42.89, None),
    ("vgg16_fsr", "mart_svhn"): (90.60, 47.17, None),
}


def trained_weights() -> dict[str, Record]:
    """What hub/weights/<arch>.<tag>/ records, by folder name."""
    return {p.parent.name: read_record(p.parent) for p in sorted(WEIGHTS.glob("*.*/metrics.json"))}


def pct(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def results_csv() -> str:
    """The zoo's results table, like timm's results/*.csv: one row per trained model and measured report (the run's
    final test, a later evaluation, robustness.json), every attack that ran as a column (accuracy %, empty where it did
    not run), with the images and eps it rests on and R's contribution of the FSR health it recorded."""
    rows = []
    for name, record in trained_weights().items():
        for i, (title, report) in enumerate(measured_reports(record.metrics, record.robustness, record.adaptive)):
            # the final test's health is metrics.json's (measured on its test images); a later report has its own
            health = report.get("fsr_health") or (record.metrics.get("fsr_health") if i == 0 else None) or {}
            contribution = next((h["r_contribution"] for h in health.values() if "r_contribution" in h), None)
            row = {"model": name, "report": title, "images": report["images"], "eps": eps_text(report["eps"])}
            row |= {c: f"{100 * report['accuracy'][c]:.2f}" if c in report["accuracy"] else "" for c in RESULT_COLUMNS}
            rows.append(row | {"r_contribution": "" if contribution is None else f"{contribution:.4g}"})
    out = io.StringIO()
    writer = csv.DictWriter(
        out, ["model", "report", "images", "eps", *RESULT_COLUMNS, "r_contribution"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def robustbench_entry(name: str, record: Record) -> dict | None:
    """RobustBench's model_info entry (model_info/<dataset>/Linf/<name>.json) for a trained model, from its largest
    AutoAttack report, with the adaptive ensemble as `external` where it is lower; None without AutoAttack. The
    images each figure rests on are in `footnote` and `evaluated_images` (RobustBench needs all test images)."""
    reports = [report for _, report in measured_reports(record.metrics, record.robustness, record.adaptive)]
    autoattack = max((r for r in reports if "autoattack" in r["accuracy"]), key=lambda r: r["images"], default=None)
    if autoattack is None:
        return None
    config = record.config
    fsr = bool(config.get("fsr_stages"))
    robust = 100 * autoattack["accuracy"]["autoattack"]
    footnote = f"AutoAttack (standard) on the first {autoattack['images']:,} test images, not all of them"
    entry = {
        "link": f"https://huggingface.co/{HF_ORG}/{name}",
        "name": f"fsr-zoo {name}: {network_name(config)} {'with FSR' if fsr else 'without FSR (baseline)'}",
        "authors": "fsr-zoo (FSR: Woo Jae Kim, Yoonki Cho, Junsik Jung, Sung-Eui Yoon)",
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": autoattack["dataset"],
        "venue": "CVPR 2023 (FSR)" if fsr else "",
        "architecture": ROBUSTBENCH_ARCHITECTURES[config["backbone"]] + (" + FSR" if fsr else ""),
        "eps": eps_text(autoattack["eps"]),
        "clean_acc": f"{100 * autoattack['accuracy']['natural']:.2f}",
        "reported": f"{robust:.2f}",
        "autoattack_acc": f"{robust:.2f}",
    }
    images = {"autoattack": autoattack["images"]}
    adaptive = record.adaptive
    if adaptive and "adaptive_ensemble" in adaptive["accuracy"]:
        images["adaptive"] = adaptive["images"]
        value = 100 * adaptive["accuracy"]["adaptive_ensemble"]
        footnote += (
            f"; every attack of the adaptive evaluation together (the attacks designed against FSR and the others of "
            f"its report) gives {value:.2f} % on the first {adaptive['images']:,}"
        )
        if round(value, 2) < round(robust, 2):  # as the entry writes them
            entry["external"] = f"{value:.2f}"
    return entry | {"footnote": footnote + ".", "timm_name": name, "evaluated_images": images}


def robustbench_files() -> dict[Path, str]:
    entries = {name: robustbench_entry(name, record) for name, record in trained_weights().items()}
    return {ROBUSTBENCH / f"{n}.json": json.dumps(e, indent=2) + "\n" for n, e in entries.items() if e is not None}


def render() -> str:
    trained = trained_weights()
    lines = [
        "# fsr-zoo: the zoo's model card",
        "",
        "<!-- Written by `python hub/zoo_card.py` from the registered models and hub/weights/*/ (metrics.json, "
        "robustness.json); edit that script, not this file. -->",
        "",
        "Image classifiers made robust to L-inf adversarial examples (eps 8/255) by adversarial training, with and "
        "without Feature Separation and Recalibration (FSR, Kim et al., CVPR 2023), as timm models and transformers "
        "`PreTrainedModel`s (`import fsr_models` registers both). Inputs are [0, 1] pixels without normalisation. "
        "Every measured number below was produced by a run in this repository and is read from that run's "
        "`metrics.json` or `robustness.json`; the paper's numbers are quoted from its tables and marked as such.",
        "",
        "## Models and tags",
        "",
        "| architecture | network | FSR | parameters (M) | tags | weights published on the Hub "
        "| trained here, not yet on the Hub |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for backbone, arch in ((b, a) for b, names in fsr_models.ARCHITECTURES.items() for a in names):
        tags = [name.split(".", 1)[1] for name in timm.list_models(arch, include_tags=True) if "." in name]
        model = timm.create_model(arch)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        published = [t for t in tags if f"{arch}.{t}" in fsr_models.published()]
        local = [t for t in tags if f"{arch}.{t}" in trained and t not in published]
        network = fsr_models.facts.BACKBONES[backbone].name
        lines.append(
            f"| `{arch}` | {network} | {'yes' if model.fsr_modules() else 'no'} | {params:.2f} "
            f"| {', '.join(tags)} | "
            f"{', '.join(published) or 'none yet'} | {', '.join(local) or '-'} |"
        )
    lines += [
        "",
        "Parameters count the network only: FSR's auxiliary heads live in the training loss. A tag names the "
        "setting its weights were trained in (method_dataset); `pretrained=True` works for the published ones "
        "and fails with a message naming the tag for the others.",
        "",
    ]

    lines += [
        "## Measured results beside the paper",
        "",
        "Every measured report of every trained model, one row each with the images and eps it rests on, is also "
        "in [results/zoo_robustness.csv](results/zoo_robustness.csv), generated with this card.",
        "",
        "Accuracy (%), eps 8/255, PGD-20 with step eps/10 and no random start (the paper's protocol). Measured "
        "natural and PGD-20 accuracy are on the test images the run column names (the whole CIFAR-10 test set "
        "is 10,000); AutoAttack (standard, pyautoattack) on the first images as noted. The paper trained 100 "
        "epochs at batch 128 on all training images.",
        "",
        "| model.tag | training run | natural | PGD-20 | AutoAttack | paper natural | paper PGD-20 "
        "| paper AutoAttack |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in sorted(set(trained) | {f"{a}.{t}" for a, t in PAPER}):
        arch, tag = name.split(".", 1)
        paper = PAPER.get((arch, tag), (None, None, None))
        record = trained.get(name)
        if record is None:
            run, natural, pgd20, aa = "not trained yet", None, "-", "-"
        else:
            m, facts = record.metrics, run_facts(record.metrics)
            short = " (short schedule)" if facts["epochs"] < PAPER_EPOCHS else ""
            differs = deviations(record.config, m)
            setting = f"; not the paper's setting: {'; '.join(t for _, t in differs)}" if differs else ""
            test = final_test_report(m)
            run = (
                f"[{facts['train_images']:,} images, {facts['epochs']} epochs{short}, batch {facts['batch_size']}]"
                f"(hub/weights/{name}/README.md){setting}, tested on {test['images']:,}"
            )
            (_, natural), (pgd_name, pgd_value) = test["accuracy"].items()
            natural = 100 * natural
            pgd20 = f"{100 * pgd_value:.2f}" + ("" if pgd_name == "pgd20" else f" ({column_title(pgd_name)})")
            report = m.get("evaluation", {})
            aa = (
                f"{100 * report['accuracy']['autoattack']:.2f} (first {report['images']:,})"
                if "autoattack" in report.get("accuracy", {})
                else "-"
            )
        lines.append(
            f"| {name} | {run} | {pct(natural)} | {pgd20} | {aa} | {pct(paper[0])} | {pct(paper[1])} "
            f"| {pct(paper[2])} |"
        )
    lines += [
        "",
        "Paper: Table 1 (ResNet-18), Table 2 (VGG16), Table 3 (AutoAttack, ResNet-18 on CIFAR-10). "
        "WideResNet-34-10, CIFAR-100 and Tiny ImageNet results are in the paper's supplementary material.",
        "",
    ]

    lines += ["## The trained models", ""]
    for name, record in trained.items():
        lines += [f"### {name}", "", *model_lines(name, record)]
    if not trained:
        lines += ["No weights have been trained yet.", ""]
    pairs = [
        (name, other)
        for name in trained
        if name.split(".")[0].endswith("_fsr")
        if (other := name.replace("_fsr.", "_plain.", 1)) in trained
        and not deviations(trained[name].config, trained[name].metrics)
        and not deviations(trained[other].config, trained[other].metrics)
    ]
    if pairs:
        lines += [
            "## FSR against its plain baseline, measured",
            "",
            "Each FSR model beside the same network without FSR, trained for the same tag (accuracy %, eps "
            "8/255; test images in brackets).",
            "",
        ]
        for fsr, plain in pairs:
            lines += [
                f"### {fsr} and {plain}",
                "",
                *comparison_lines(fsr, trained[fsr].metrics, plain, trained[plain].metrics),
            ]
    lines += [
        "Publish a trained model with `python hub/publish.py <run or weights folder>` (`--dry-run` first); "
        "it writes the repository's own card from the same files.",
        "",
    ]

    example = next(iter(trained), "resnet18_fsr.at_cifar10")
    lines += [
        "## Load",
        "",
        "```python",
        "import fsr_models  # registers the architectures with timm and transformers",
        "import timm",
        "from transformers import AutoModelForImageClassification",
        "",
        f'model = timm.create_model("local-dir:hub/weights/{example}", pretrained=True).eval()',
        "logits = model(images)  # images: float tensor (N, 3, 32, 32), RGB in [0, 1], no normalisation",
        "",
        f'hf_model = AutoModelForImageClassification.from_pretrained("hub/weights/{example}")  # the same weights',
        "logits = hf_model(pixel_values=images).logits",
        "```",
        "",
        "## Licence",
        "",
        "The code and the weights are released under the MIT licence (`LICENSE`). The FSR method is Kim et al.'s "
        "(CVPR 2023): cite their paper when you use it.",
        "",
        "## Intended use and limits",
        "",
        "Research checkpoints for studying adversarial robustness. Robustness holds only in the threat model "
        "of training and measurement (L-inf, eps 8/255, 32x32 images of the training data set); it is not "
        "certified and says nothing about other norms, budgets, corruptions or data. Short-schedule weights "
        "are below the paper's figures and are labelled as such.",
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)


def model_lines(name: str, record: Record) -> list[str]:
    """One trained model: what it is and how it was trained, every measured report with the command that repeats
    it, its robustness curve and, for FSR, its health."""
    config, m = record.config, record.metrics
    facts, train = run_facts(m), m["train_config"]
    fsr = config.get("fsr_stages")
    where = f"with FSR after stage {', '.join(map(str, fsr))}" if fsr else "without FSR"
    budget = f", in a {train['time_budget_min']:g}-minute budget" if train.get("time_budget_min") else ""
    lines = [
        f"{network_name(config)} {where}, {METHOD_NAMES.get(train['method'], train['method'])} on "
        f"{facts['train_images']:,} {dataset_name(facts['dataset'])} training images: "
        f"{schedule_text(m, facts)}{budget}. Trained and tested by the command in "
        f"[hub/weights/{name}/README.md](hub/weights/{name}/README.md); the full config is `train_config` in its "
        "`metrics.json`.",
        "",
    ]
    reports = measured_reports(m, record.robustness, record.adaptive)
    for title, report in reports:
        lines += report_lines(title, report, f"hub/weights/{name}")
    lines += attack_notes([report for _, report in reports])
    if record.robustness and "curve" in record.robustness:
        lines += curve_lines(record.robustness, f"hub/weights/{name}/{CURVE_NAME}" if record.curve_png else None)
    if fsr:
        lines += health_lines(record)
    if fsr and record.figure_png:
        lines += figure_lines(f"hub/weights/{name}/{FIGURE_NAME}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date")
    args = parser.parse_args(argv)
    files = {
        CARD: render(),
        RESULTS: results_csv(),
        **robustbench_files(),
        **{
            p.parent / IMAGE_PROCESSOR_NAME: image_processor_config(p.parent)
            for p in sorted(WEIGHTS.glob("*.*/config.json"))
        },
    }
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path} is out of date: run python hub/zoo_card.py", file=sys.stderr)
        if not stale:
            print(f"{CARD}, {RESULTS}, {ROBUSTBENCH} and the hub/weights image processors are up to date")
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
