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
    headline_lines,
    health_lines,
    largest_report_with,
    measured_reports,
    network_name,
    read_record,
    report_lines,
    run_facts,
    schedule_text,
)
from fsr_models.evaluation.report import COLUMNS, column_title
from fsr_models.facts import HF_ORG, PAPER_EPOCHS, twin_name
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


# How a checkout's trained weights load (the card's and each weights README's snippet; it runs as it is)
LOAD_SNIPPET = """```python
import fsr_models  # registers the architectures with timm and transformers
import timm
from transformers import AutoModelForImageClassification
from fsr_models.datasets import load_cifar10

images, labels = load_cifar10("test", limit=8)  # float (N, 3, 32, 32), RGB in [0, 1], no normalisation
# timm's create_model returns train mode: eval() before classifying
model = timm.create_model("local-dir:{folder}", pretrained=True).eval()
logits = model(images)

# the same weights in transformers, which returns eval mode
hf_model = AutoModelForImageClassification.from_pretrained("{folder}")
logits = hf_model(pixel_values=images).logits
```"""


def trained_weights() -> dict[str, Record]:
    """What hub/weights/<arch>.<tag>/ records, by folder name."""
    return {p.parent.name: read_record(p.parent) for p in sorted(WEIGHTS.glob("*.*/metrics.json"))}


def pct(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def results_csv() -> str:
    """The zoo's results table, like timm's results/*.csv: one row per trained model and measured report (the run's
    final test, a later evaluation, robustness.json), every attack that ran as a column (accuracy %, empty where it did
    not run), with the images and eps it rests on, what each attack found beyond PGD-20 (`attack:images` pairs: the
    images it fools that PGD-20 leaves standing) and R's contribution of the FSR health it recorded."""
    rows = []
    for name, record in trained_weights().items():
        for i, (title, report) in enumerate(measured_reports(record.metrics, record.robustness, record.adaptive)):
            # the final test's health is metrics.json's (measured on its test images); a later report has its own
            health = report.get("fsr_health") or (record.metrics.get("fsr_health") if i == 0 else None) or {}
            contribution = next((h["r_contribution"] for h in health.values() if "r_contribution" in h), None)
            row = {"model": name, "report": title, "images": report["images"], "eps": eps_text(report["eps"])}
            row |= {c: f"{100 * report['accuracy'][c]:.2f}" if c in report["accuracy"] else "" for c in RESULT_COLUMNS}
            found = report.get("found_beyond_pgd20", {})
            row["found_beyond_pgd20"] = ";".join(f"{attack}:{count}" for attack, count in found.items())
            rows.append(row | {"r_contribution": "" if contribution is None else f"{contribution:.4g}"})
    out = io.StringIO()
    columns = ["model", "report", "images", "eps", *RESULT_COLUMNS, "found_beyond_pgd20", "r_contribution"]
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


README = ROOT / "README.md"
# The parts of the README and of the weights' READMEs written by this script lie between such lines
GENERATED = "<!-- {}: written by python hub/zoo_card.py from the measured files; edit that script -->"
END = "<!-- end of {} -->"


def with_generated(path: Path, part: str, lines: list[str]) -> str:
    """The text of `path` with its generated `part` (between GENERATED and END) replaced by `lines`."""
    text, start, end = path.read_text(), GENERATED.format(part), END.format(part)
    if start not in text or end not in text:
        raise ValueError(f"{path} lacks the lines {start!r} and {end!r} around its part {part!r}")
    before, rest = text.split(start, 1)
    return before + start + "\n" + "\n".join(lines).rstrip("\n") + "\n" + end + rest.split(end, 1)[1]


def trained_weights_table() -> list[str]:
    """The README's table of trained weights (one row per model: the run, natural and PGD-20 on its test images,
    AutoAttack and the worst case of the adaptive evaluation, the paper's figures)."""
    rows = [
        "| model.tag | run | natural | PGD-20 | AutoAttack | worst case (adaptive) | paper (100 epochs): natural / "
        "PGD-20 / AutoAttack |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, record in trained_weights().items():
        facts, test = run_facts(record.metrics), final_test_report(record.metrics)
        natural, pgd20 = (100 * test["accuracy"][k] for k in ("natural", "pgd20"))
        paper = " / ".join(pct(v) for v in PAPER.get(tuple(name.split(".", 1)), (None, None, None)))
        rows.append(
            f"| {name} | [{facts['epochs']} epochs, batch {facts['batch_size']}](hub/weights/{name}/README.md) "
            f"| {natural:.2f} | {pgd20:.2f} | {first_images(record, 'autoattack')} "
            f"| {first_images(record, 'adaptive_ensemble')} | {paper} |"
        )
    return rows


def weights_readme(name: str, record: Record) -> str:
    """A weights folder's README with its measured part rewritten: the reports, curve, health, figure and loading."""
    lines = [*measured_lines(name, record, files=""), "## Load", "", LOAD_SNIPPET.format(folder=f"hub/weights/{name}")]
    return with_generated(WEIGHTS / name / "README.md", "measured", lines)


def first_images(record: Record, attack: str) -> str:
    """'42.60 (first 1,000)': a model's accuracy under `attack` in its report with the most images that has it."""
    report = largest_report_with(
        [r for _, r in measured_reports(record.metrics, record.robustness, record.adaptive)], attack
    )
    return f"{100 * report['accuracy'][attack]:.2f} (first {report['images']:,})" if report else "-"


def robustbench_entry(name: str, record: Record) -> dict | None:
    """RobustBench's model_info entry (model_info/<dataset>/Linf/<name>.json) for a trained model, from its largest
    AutoAttack report, with the adaptive ensemble as `external` where it is lower; None without AutoAttack. The
    images each figure rests on are in `footnote` and `evaluated_images` (RobustBench needs all test images)."""
    reports = [r for _, r in measured_reports(record.metrics, record.robustness, record.adaptive)]
    autoattack = largest_report_with(reports, "autoattack")
    if autoattack is None:
        return None
    config = record.config
    fsr = bool(config.get("fsr_stages"))
    robust = 100 * autoattack["accuracy"]["autoattack"]
    footnote = f"AutoAttack (standard) on the first {autoattack['images']:,} test images, not all of them"
    published = name in fsr_models.published()
    if not published:
        footnote = f"Weights not published on the Hub yet (hub/weights/{name} of the fsr-zoo repository). " + footnote
    entry = {
        "link": f"https://huggingface.co/{HF_ORG}/{name}" if published else "",
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


def models_lines(trained: dict[str, Record]) -> list[str]:
    """The card's header and its table of registered architectures, their tags and what is trained or published."""
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
    return lines


def paper_table_lines(trained: dict[str, Record]) -> list[str]:
    """Every paper setting and trained model: what was measured beside what the paper reports."""
    lines = []
    lines += [
        "## Measured results beside the paper",
        "",
        "Every measured report of every trained model, one row each with the images and eps it rests on, is also "
        "in [results/zoo_robustness.csv](results/zoo_robustness.csv), generated with this card.",
        "",
        "Accuracy (%), eps 8/255, PGD-20 with step eps/10 and no random start (the paper's protocol). Measured "
        "natural and PGD-20 accuracy are on the test images the run column names (the whole CIFAR-10 test set "
        "is 10,000); AutoAttack (standard, pyautoattack) and the worst case over every attack of the adaptive "
        "evaluation (the attacks designed against FSR among them: the figure to quote) on the first images as "
        "noted. The paper trained 100 epochs at batch 128 on all training images.",
        "",
        "| model.tag | training run | natural | PGD-20 | AutoAttack | worst case (adaptive) | paper natural "
        "| paper PGD-20 | paper AutoAttack |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in sorted(set(trained) | {f"{a}.{t}" for a, t in PAPER}):
        arch, tag = name.split(".", 1)
        paper = PAPER.get((arch, tag), (None, None, None))
        record = trained.get(name)
        if record is None:
            run, natural, pgd20, aa, worst = "not trained yet", None, "-", "-", "-"
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
            aa, worst = first_images(record, "autoattack"), first_images(record, "adaptive_ensemble")
        lines.append(
            f"| {name} | {run} | {pct(natural)} | {pgd20} | {aa} | {worst} | {pct(paper[0])} | {pct(paper[1])} "
            f"| {pct(paper[2])} |"
        )
    lines += [
        "",
        "Paper: Table 1 (ResNet-18), Table 2 (VGG16), Table 3 (AutoAttack, ResNet-18 on CIFAR-10). "
        "WideResNet-34-10, CIFAR-100 and Tiny ImageNet results are in the paper's supplementary material.",
        "",
    ]
    return lines


def pair_lines(trained: dict[str, Record]) -> list[str]:
    """Each trained FSR model beside its trained plain twin, when both are in the paper's setting of their tag."""
    lines = []
    pairs = [
        (name, other)
        for name in trained
        if name.split(".")[0].endswith("_fsr")
        if (other := twin_name(name)) in trained
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
                *comparison_lines(
                    fsr,
                    trained[fsr].metrics,
                    plain,
                    trained[plain].metrics,
                    (trained[fsr].robustness, trained[plain].robustness),
                ),
            ]
    return lines


def render() -> str:
    trained = trained_weights()
    lines = models_lines(trained) + paper_table_lines(trained)
    lines += ["## The trained models", ""]
    for name, record in trained.items():
        lines += [f"### {name}", "", *model_lines(name, record)]
    if not trained:
        lines += ["No weights have been trained yet.", ""]
    lines += pair_lines(trained)
    lines += [
        "Publish a trained model with `python hub/publish.py <run or weights folder>` (`--dry-run` first); "
        "it writes the repository's own card from the same files.",
        "",
    ]

    example = next(iter(trained), "resnet18_fsr.at_cifar10")
    lines += [
        "## Load",
        "",
        *LOAD_SNIPPET.format(folder=f"hub/weights/{example}").splitlines(),
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
    """One trained model in the zoo's card: what it is and how it was trained, then `measured_lines`."""
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
    return lines + measured_lines(name, record, f"hub/weights/{name}/")


def measured_lines(name: str, record: Record, files: str) -> list[str]:
    """What was measured of a trained model: the robustness to quote, every report with the checks that ran and the
    command that repeats it, what each attack finds beyond PGD-20, the robustness curve and, for FSR, its health and
    Figure 1; `files` is the path of the weights folder as the document that shows its images sees it."""
    lines = headline_lines(record)
    reports = measured_reports(record.metrics, record.robustness, record.adaptive)
    for i, (title, report) in enumerate(reports):
        lines += report_lines(title, report, f"hub/weights/{name}", evaluation=i > 0)
    lines += attack_notes([report for _, report in reports])
    if record.curve_report:
        lines += curve_lines(record.curve_report, f"{files}{CURVE_NAME}" if record.curve_png else None)
    if record.config.get("fsr_stages"):
        lines += health_lines(record)
        lines += figure_lines(f"{files}{FIGURE_NAME}") if record.figure_png else []
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date")
    args = parser.parse_args(argv)
    files = {
        CARD: render(),
        README: with_generated(README, "trained weights", trained_weights_table()),
        **{WEIGHTS / name / "README.md": weights_readme(name, record) for name, record in trained_weights().items()},
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
