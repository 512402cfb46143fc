#!/usr/bin/env python3
"""Write the zoo's documents from the registered models, the paper's results (`fsr_models.facts.paper`) and the records
of each trained model in hub/weights/<model>.<tag>/, with the renderer of the Hub cards (`fsr_models.hub`):
MODEL_CARD.md; the measured part of each weights folder's README.md (between its `measured` marker lines);
results/zoo_robustness.csv (every measured report, one row each); results/robustbench/<model>.json (RobustBench's
model_info format). Which tags are on the Hub is hub/published.json's to say (hub/publish.py adds each upload of a
paper setting's repository).

    python hub/zoo_card.py            # rewrite them
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
from fsr_models.evaluation.report import COLUMNS, column_title, eps_text, joined
from fsr_models.facts.networks import BACKBONES, HF_ORG, twin_name
from fsr_models.facts.paper import PAPER_EPOCHS, PAPER_RESULTS
from fsr_models.hub.card import limits_lines, use_lines
from fsr_models.hub.measured_text import comparison_lines, headline_lines, measured_lines
from fsr_models.hub.naming import deviations, network_name
from fsr_models.hub.records import Record, read_record
from fsr_models.hub.training_text import summary_line

ROOT = Path(__file__).resolve().parents[1]
CARD, WEIGHTS = ROOT / "MODEL_CARD.md", ROOT / "hub" / "weights"
RESULTS, ROBUSTBENCH = ROOT / "results" / "zoo_robustness.csv", ROOT / "results" / "robustbench"
ROBUSTBENCH_ARCHITECTURES = {"resnet18": "ResNet-18", "vgg16": "VGG-16 (BN)", "wrn34_10": "WideResNet-34-10"}
PUBLISHED = ROOT / "hub" / "published.json"  # the "<architecture>.<tag>" repositories uploaded by hub/publish.py
GENERATED = "<!-- measured: written by python hub/zoo_card.py from the measured files; edit that script -->"
END = "<!-- end of measured -->"


def published_names() -> set[str]:
    return set(json.loads(PUBLISHED.read_text()))


def trained_weights() -> dict[str, Record]:
    return {p.parent.name: read_record(p.parent) for p in sorted(WEIGHTS.glob("*.*/metrics.json"))}


def weights_readme(name: str, record: Record) -> str:
    """A weights folder's README, its hand-written account of the run kept, its measured part written anew."""
    folder = f"hub/weights/{name}"
    lines = [*headline_lines(record), *measured_lines(record, folder), "## Load", ""]
    lines += use_lines(f"local-dir:{folder}", folder, record.config["pretrained_cfg"]["input_size"], False)
    text = (WEIGHTS / name / "README.md").read_text()
    if GENERATED not in text or END not in text:
        raise ValueError(f"{WEIGHTS / name / 'README.md'} lacks the lines {GENERATED!r} and {END!r}")
    before, rest = text.split(GENERATED, 1)
    return before + GENERATED + "\n" + "\n".join(lines).rstrip("\n") + "\n" + END + rest.split(END, 1)[1]


def results_csv(trained: dict[str, Record]) -> str:
    """One row per trained model and report: every attack as a column (accuracy %, empty where it did not run), the
    images and eps, what each attack found beyond PGD-20 (`attack:images`) and R's contribution where recorded."""
    columns = ["model", "report", "images", "eps", *COLUMNS, "found_beyond_pgd20", "r_contribution"]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for name, record in trained.items():
        for i, (title, report) in enumerate(record.reports):
            # the final test's FSR health is metrics.json's (measured on its test images); later reports have their own
            health = report.get("fsr_health") or (record.metrics.get("fsr_health") if i == 0 else None) or {}
            r = next((h["r_contribution"] for h in health.values() if "r_contribution" in h), None)
            found = report.get("found_beyond_pgd20", {})
            writer.writerow(
                {"model": name, "report": title, "images": report["images"], "eps": eps_text(report["eps"])}
                | {c: f"{100 * report['accuracy'][c]:.2f}" if c in report["accuracy"] else "" for c in COLUMNS}
                | {"found_beyond_pgd20": ";".join(f"{a}:{n}" for a, n in found.items())}
                | {"r_contribution": "" if r is None else f"{r:.4g}"}
            )
    return out.getvalue()


def robustbench_entry(name: str, record: Record) -> dict | None:
    """RobustBench's model_info entry from the largest AutoAttack report (None without one), with the adaptive
    ensemble as `external` where lower; `footnote` and `evaluated_images` say on how many images each rests."""
    autoattack = record.largest_with("autoattack")
    if autoattack is None:
        return None
    fsr, published = bool(record.config.get("fsr_stages")), name in published_names()
    robust = f"{100 * autoattack['accuracy']['autoattack']:.2f}"
    footnote = f"AutoAttack (standard) on the first {autoattack['images']:,} test images, not all of them"
    if not published:
        footnote = f"Weights not published on the Hub yet (hub/weights/{name} of the fsr-zoo repository). {footnote}"
    entry = {
        "link": f"https://huggingface.co/{HF_ORG}/{name}" if published else "",
        "name": f"fsr-zoo {name}: {network_name(record.config)} {'with FSR' if fsr else 'without FSR (baseline)'}",
        "authors": "fsr-zoo (FSR: Woo Jae Kim, Yoonki Cho, Junsik Jung, Sung-Eui Yoon)",
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": autoattack["dataset"],
        "venue": "CVPR 2023 (FSR)" if fsr else "",
        "architecture": ROBUSTBENCH_ARCHITECTURES[record.config["backbone"]] + (" + FSR" if fsr else ""),
        "eps": eps_text(autoattack["eps"]),
        "clean_acc": f"{100 * autoattack['accuracy']['natural']:.2f}",
        "reported": robust,
        "autoattack_acc": robust,
    }
    images = {"autoattack": autoattack["images"]}
    if record.adaptive and "adaptive_ensemble" in record.adaptive["accuracy"]:
        images["adaptive"] = record.adaptive["images"]
        worst = f"{100 * record.adaptive['accuracy']['adaptive_ensemble']:.2f}"
        footnote += (
            f"; every attack of the adaptive evaluation together (the attacks designed against FSR and the others of "
            f"its report) gives {worst} % on the first {record.adaptive['images']:,}"
        )
        if float(worst) < float(robust):
            entry["external"] = worst
    return entry | {"footnote": footnote + ".", "timm_name": name, "evaluated_images": images}


def accuracy_on_most_images(record: Record | None, attack: str) -> str:
    """'42.60 (first 1,000)': the accuracy under `attack` of the report with the most images that has it."""
    report = record and record.largest_with(attack)
    return f"{100 * report['accuracy'][attack]:.2f} (first {report['images']:,})" if report else "-"


def models_table(trained: dict[str, Record]) -> list[str]:
    lines = [
        "| architecture | network | FSR | parameters (M) | tags | published on the Hub | trained here, not yet on the "
        "Hub |",
        "| --- " * 7 + "|",
    ]
    for backbone, arch in ((b, a) for b, names in fsr_models.ARCHITECTURES.items() for a in names):
        tags = [name.split(".", 1)[1] for name in timm.list_models(arch, include_tags=True) if "." in name]
        model = timm.create_model(arch)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        published = [t for t in tags if f"{arch}.{t}" in published_names()]
        local = [t for t in tags if f"{arch}.{t}" in trained and t not in published]
        lines.append(
            f"| `{arch}` | {BACKBONES[backbone].name} | {'yes' if model.fsr_modules() else 'no'} | {params:.2f} | "
            f"{', '.join(tags)} | {', '.join(published) or 'none yet'} | {', '.join(local) or '-'} |"
        )
    return lines


def results_table(trained: dict[str, Record]) -> list[str]:
    """Every paper setting and trained model: natural and PGD-20 of the final test, AutoAttack and the adaptive
    evaluation's worst case where measured, beside the paper's figures."""
    lines = [
        "| model.tag | training run | natural | PGD-20 | AutoAttack | worst case (adaptive) | paper natural | paper "
        "PGD-20 | paper AutoAttack |",
        "| --- " * 9 + "|",
    ]
    pct = lambda value: "-" if value is None else f"{value:.2f}"  # noqa: E731
    for name in sorted(set(trained) | {f"{arch}.{tag}" for arch, tag in PAPER_RESULTS}):
        record, paper = trained.get(name), PAPER_RESULTS.get(tuple(name.split(".", 1)))
        paper = [pct(getattr(paper, k, None)) for k in ("natural", "pgd20", "autoattack")]
        if record is None:
            lines.append(f"| {name} | not trained yet | - | - | - | - | {' | '.join(paper)} |")
            continue
        run, test = record.run, record.metrics["test"]
        short = " (short schedule)" if run["epochs"] < PAPER_EPOCHS else ""
        differs = "; ".join(text for _, text in deviations(record))
        described = (
            f"[{run['train_images']:,} images, {run['epochs']} epochs{short}, batch {run['batch_size'] or '-'}]"
            f"(hub/weights/{name}/README.md){f'; not the paper setting: {differs}' if differs else ''}, tested "
            f"on {test['images']:,}"
        )
        # the final test's PGD is PGD-20 unless the run chose other steps (eval_attack_steps), then named
        pgd = next((k for k in test["accuracy"] if k.startswith("pgd")), None)
        measured = [pct(100 * test["accuracy"]["natural"]) if "natural" in test["accuracy"] else "-"]
        measured += [
            "-"
            if pgd is None
            else pct(100 * test["accuracy"][pgd]) + ("" if pgd == "pgd20" else f" ({column_title(pgd)})")
        ]
        measured += [
            accuracy_on_most_images(record, "autoattack"),
            accuracy_on_most_images(record, "adaptive_ensemble"),
        ]
        lines.append(f"| {name} | {described} | {' | '.join(measured)} | {' | '.join(paper)} |")
    return lines


def render(trained: dict[str, Record]) -> str:
    lines = [
        "# fsr-zoo: the zoo's model card",
        "",
        "<!-- Written by `python hub/zoo_card.py` from the registered models, the paper's tables and hub/weights/*/; "
        "edit that script, not this file. -->",
        "",
        "Image classifiers made robust to L-inf adversarial examples (eps 8/255) by adversarial training, with and "
        "without Feature Separation and Recalibration (FSR, Kim et al., CVPR 2023), as timm models and transformers "
        "`PreTrainedModel`s (`import fsr_models` registers both). Inputs are [0, 1] pixels without normalisation. "
        "Every measured number below was produced by a run in this repository and read from its records; the "
        "paper's are quoted from its tables (Tables 1-3; WideResNet-34-10, CIFAR-100 and Tiny ImageNet are in its "
        "supplementary material) and marked as such.",
        "",
        "## Models and tags",
        "",
        *models_table(trained),
        "",
        "Parameters count the network only: FSR's auxiliary heads live in the training loss. A tag names the setting "
        "its weights were trained in: the paper's as method_dataset, a recipe of the zoo's own by what it adds (e.g. "
        "at_nfgsm_15ep_cifar10: AT with N-FGSM for 15 epochs); `pretrained=True` works for the published ones and "
        "fails with a message naming the tag for the others.",
        "",
        "## Measured results beside the paper",
        "",
        "Accuracy (%), eps 8/255, PGD-20 with step eps/10 and no random start (the paper's protocol) on the test "
        "images the run column names (CIFAR-10 has 10,000); AutoAttack (standard) and the worst case per image over "
        "every attack of the adaptive evaluation (the figure to quote) on the first images noted. The paper trained "
        "100 epochs at batch 128 on all training images. Every report of every trained model, one row each, is in "
        "[results/zoo_robustness.csv](results/zoo_robustness.csv).",
        "",
        *results_table(trained),
        "",
        "## The trained models",
        "",
    ]
    for name, record in trained.items():
        fsr = bool(record.config.get("fsr_stages"))
        shown = ["every report with the command that measures it again"]
        shown += ["the checks that ran with the later evaluations"] if len(record.reports) > 1 else []
        shown += ["the robustness curve"] if record.curve_report else []
        shown += ["FSR's health"] if fsr else []
        shown += ["the paper's Figure 1"] if fsr and record.figure_png else []
        lines += [f"### {name}", "", summary_line(record), "", *headline_lines(record)]
        lines += [f"In [hub/weights/{name}/README.md](hub/weights/{name}/README.md): {joined(shown)}.", ""]
    pairs = [(n, twin_name(n)) for n in trained if n.split(".")[0].endswith("_fsr") and twin_name(n) in trained]
    pairs = [(f, p) for f, p in pairs if not deviations(trained[f]) and not deviations(trained[p])]
    if pairs:
        lines += ["## FSR against its plain baseline, measured", ""]
        for fsr, plain in pairs:
            lines += [f"### {fsr} and {plain}", "", *comparison_lines(trained[fsr], trained[plain])]
    if trained:
        name, record = next(iter(trained.items()))
        input_size = record.config["pretrained_cfg"]["input_size"]
        lines += ["## Load", "", *use_lines(f"local-dir:hub/weights/{name}", f"hub/weights/{name}", input_size, False)]
    lines += [
        "Publish a trained model with `python hub/publish.py <run or weights folder>` (`--dry-run` first); it writes "
        "the repository's own card from the same records.",
        "",
        "## Intended use, limits and citation",
        "",
        *limits_lines("L-inf perturbations of at most 8/255 on images like those of the data set it was trained on"),
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date")
    args = parser.parse_args(argv)
    trained = trained_weights()
    entries = {name: robustbench_entry(name, record) for name, record in trained.items()}
    files = {
        CARD: render(trained),
        RESULTS: results_csv(trained),
        **{WEIGHTS / name / "README.md": weights_readme(name, record) for name, record in trained.items()},
        **{ROBUSTBENCH / f"{n}.json": json.dumps(e, indent=2) + "\n" for n, e in entries.items() if e is not None},
    }
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text() != text]
    for path in stale:
        if args.check:
            print(f"{path} is out of date: run python hub/zoo_card.py", file=sys.stderr)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[path])
            print(f"wrote {path}")
    if args.check and not stale:
        print(f"{CARD}, {RESULTS}, {ROBUSTBENCH} and the weights folders' READMEs are up to date")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
