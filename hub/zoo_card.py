#!/usr/bin/env python3
"""Write MODEL_CARD.md, the zoo's card, from what exists: the registered models, hub/weights/*/metrics.json (every
measured number) and the paper's tables (quoted, and marked as the paper's).

    python hub/zoo_card.py            # rewrite MODEL_CARD.md
    python hub/zoo_card.py --check    # exit 1 if MODEL_CARD.md is not what the current files give
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's fsr_models, also when not installed

import timm  # noqa: E402

import fsr_models  # noqa: E402
from fsr_models.card import BACKBONE_NAMES, CITATION, PAPER_EPOCHS, final_test_report  # noqa: E402
from fsr_models.evaluate import column_title  # noqa: E402

CARD = ROOT / "MODEL_CARD.md"
WEIGHTS = ROOT / "hub" / "weights"
# The paper's accuracies (%): natural, PGD-20, AutoAttack (None: not reported). ResNet-18: Table 1 (CIFAR-10 and
# SVHN) and Table 3 (AutoAttack, CIFAR-10); VGG16: Table 2. WRN-34-10, CIFAR-100 and Tiny ImageNet are in the
# supplementary material, which this repository does not have.
PAPER = {
    ("resnet18_plain", "at_cifar10"): (85.02, 48.22, 44.11), ("resnet18_fsr", "at_cifar10"): (81.46, 52.47, 46.41),
    ("resnet18_plain", "trades_cifar10"): (86.31, 50.74, 46.81), ("resnet18_fsr", "trades_cifar10"): (84.49, 52.27, 48.45),
    ("resnet18_plain", "mart_cifar10"): (82.73, 50.88, 44.27), ("resnet18_fsr", "mart_cifar10"): (83.28, 54.80, 46.55),
    ("resnet18_plain", "at_svhn"): (91.21, 40.85, None), ("resnet18_fsr", "at_svhn"): (91.28, 43.94, None),
    ("resnet18_plain", "trades_svhn"): (90.99, 47.12, None), ("resnet18_fsr", "trades_svhn"): (91.39, 51.49, None),
    ("resnet18_plain", "mart_svhn"): (90.50, 43.61, None), ("resnet18_fsr", "mart_svhn"): (89.87, 46.51, None),
    ("vgg16_plain", "at_cifar10"): (80.56, 47.17, None), ("vgg16_fsr", "at_cifar10"): (80.06, 49.82, None),
    ("vgg16_plain", "trades_cifar10"): (82.44, 47.39, None), ("vgg16_fsr", "trades_cifar10"): (80.78, 49.95, None),
    ("vgg16_plain", "mart_cifar10"): (76.11, 51.06, None), ("vgg16_fsr", "mart_cifar10"): (79.18, 52.69, None),
    ("vgg16_plain", "at_svhn"): (89.59, 40.27, None), ("vgg16_fsr", "at_svhn"): (91.44, 45.99, None),
    ("vgg16_plain", "trades_svhn"): (90.48, 45.99, None), ("vgg16_fsr", "trades_svhn"): (91.89, 54.56, None),
    ("vgg16_plain", "mart_svhn"): (89.95, 42.89, None), ("vgg16_fsr", "mart_svhn"): (90.60, 47.17, None),
}  # fmt: skip


def trained_weights() -> dict[str, dict]:
    """hub/weights/<arch>.<tag>/metrics.json, by folder name."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(WEIGHTS.glob("*.*/metrics.json"))}


def pct(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def render() -> str:
    trained = trained_weights()
    lines = [
        "# fsr-zoo: the zoo's model card", "",
        "<!-- Written by `python hub/zoo_card.py` from the registered models and hub/weights/*/metrics.json; "
        "edit that script, not this file. -->", "",
        "Image classifiers made robust to L-inf adversarial examples (eps 8/255) by adversarial training, with and "
        "without Feature Separation and Recalibration (FSR, Kim et al., CVPR 2023), as timm models and transformers "
        "`PreTrainedModel`s (`import fsr_models` registers both). Inputs are [0, 1] pixels without normalisation. "
        "Every measured number below was produced by a run in this repository and is read from that run's "
        "`metrics.json`; the paper's numbers are quoted from its tables and marked as such.", "",
        "## Models and tags", "",
        "| architecture | network | FSR | parameters (M) | tags | weights published on the Hub | trained here, not yet on the Hub |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for backbone, arch in ((b, a) for b, names in fsr_models.ARCHITECTURES.items() for a in names):
        tags = [name.split(".", 1)[1] for name in timm.list_models(arch, include_tags=True) if "." in name]
        model = timm.create_model(arch)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        published = [t for t in tags if f"{arch}.{t}" in fsr_models.PUBLISHED]
        local = [t for t in tags if f"{arch}.{t}" in trained and t not in published]
        lines.append(f"| `{arch}` | {BACKBONE_NAMES[backbone]} | {'yes' if model.fsr_modules() else 'no'} | {params:.2f} "
                     f"| {', '.join(tags)} | "
                     f"{', '.join(published) or 'none yet'} | {', '.join(local) or '-'} |")  # fmt: skip
    lines += ["", "Parameters count the network only: FSR's auxiliary heads live in the training loss. A tag names the "
              "setting its weights were trained in (method_dataset); `pretrained=True` works for the published ones "
              "and fails with a message naming the tag for the others.", ""]  # fmt: skip

    lines += ["## Measured results beside the paper", "",
              "Accuracy (%), eps 8/255, PGD-20 with step eps/10 and no random start (the paper's protocol). Measured "
              "natural and PGD-20 accuracy are on the test images the run column names (the whole CIFAR-10 test set "
              "is 10,000); AutoAttack (standard, pyautoattack) on the first images as noted. The paper trained 100 "
              "epochs at batch 128.", "",
              "| model.tag | training run | natural | PGD-20 | AutoAttack | paper natural | paper PGD-20 | paper AutoAttack |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name in sorted(set(trained) | {f"{a}.{t}" for a, t in PAPER}):
        arch, tag = name.split(".", 1)
        paper = PAPER.get((arch, tag), (None, None, None))
        m = trained.get(name)
        if m is None:
            run, natural, pgd20, aa = "not trained yet", None, "-", "-"
        else:
            epochs, cfg = m["epochs"], m["train_config"]
            short = " (short schedule)" if epochs < PAPER_EPOCHS else ""
            test = final_test_report(m)
            run = (f"[{epochs} epochs{short}, batch {cfg['batch_size']}](hub/weights/{name}/README.md), tested on "
                   f"{test['images']:,}")  # fmt: skip
            (_, natural), (pgd_name, pgd_value) = test["accuracy"].items()
            natural = 100 * natural
            pgd20 = f"{100 * pgd_value:.2f}" + ("" if pgd_name == "pgd20" else f" ({column_title(pgd_name)})")
            report = m.get("evaluation", {})
            aa = (f"{100 * report['accuracy']['autoattack']:.2f} (first {report['images']:,})"
                  if "autoattack" in report.get("accuracy", {}) else "-")  # fmt: skip
        lines.append(f"| {name} | {run} | {pct(natural)} | {pgd20} | {aa} | {pct(paper[0])} | {pct(paper[1])} "
                     f"| {pct(paper[2])} |")  # fmt: skip
    lines += ["", "Paper: Table 1 (ResNet-18), Table 2 (VGG16), Table 3 (AutoAttack, ResNet-18 on CIFAR-10). "
              "WideResNet-34-10, CIFAR-100 and Tiny ImageNet results are in the paper's supplementary material.", ""]

    lines += ["## How each number was produced", ""]
    for name, m in trained.items():
        line = (f"- `{name}`: trained and tested by the command in `hub/weights/{name}/README.md` (the full config is "
                f"`train_config` in its `metrics.json`; natural and PGD-20 on the test set are written by "
                f"`training/train.py` at the end of the run).")  # fmt: skip
        if "evaluation" in m:
            line += (f" AutoAttack: `python -m fsr_models.evaluate hub/weights/{name} --dataset "
                     f"{m['evaluation']['dataset']} --data-dir <data folder> --n {m['evaluation']['images']} "
                     "--attacks natural pgd20 autoattack`.")  # fmt: skip
        lines.append(line)
    if not trained:
        lines.append("- No weights have been trained yet.")
    lines += ["", "Publish a trained model with `python hub/publish.py <run or weights folder>` (`--dry-run` first); "
              "it writes the repository's own card from the same `metrics.json`.", ""]  # fmt: skip

    lines += ["## Intended use and limits", "",
              "Research checkpoints for studying adversarial robustness. Robustness holds only in the threat model "
              "of training and measurement (L-inf, eps 8/255, 32x32 images of the training data set); it is not "
              "certified and says nothing about other norms, budgets, corruptions or data. Short-schedule weights "
              "are below the paper's figures and are labelled as such.", "",
              "## Citation", "", "```bibtex", CITATION, "```", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that MODEL_CARD.md is up to date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not CARD.is_file() or CARD.read_text() != text:
            print(f"{CARD} is out of date: run python hub/zoo_card.py", file=sys.stderr)
            return 1
        print(f"{CARD} is up to date")
        return 0
    CARD.write_text(text)
    print(f"wrote {CARD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
