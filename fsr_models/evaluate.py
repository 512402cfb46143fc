"""Robustness evaluation: the paper's white-box table, AutoAttack, black-box attacks, checks against gradient masking
and the FSR feature analysis (Table 5), written as a JSON report and a Markdown table.

    python -m fsr_models.evaluate MODEL --data-dir DIR|sample [--download] [--dataset cifar10] [--n 1000]
        [--attacks natural fgsm pgd20 pgd100 cw autoattack adaptive] [--eps 8/255] [--source MODEL]
        [--twin MODEL] [--strong] [--sanity] [--curve] [--features] [--out DIR] [--overwrite]

MODEL is a registered tag (`resnet18_fsr.at_cifar10`), `hf-hub:<id>`, a folder in the zoo layout (also as
`local-dir:<folder>`; a training run's `model/` or `best/`), a training run folder, or any timm model name
(`resnet18` evaluates a plain timm model, which must take [0, 1] pixels). The paper's protocol is the default: eps
8/255, eval mode, no random start, step eps/10 (FGSM; PGD-20 and PGD-100 on cross-entropy; "C&W" = PGD-30 on the C&W
margin with kappa 50). `--strong` adds a random start and 5 restarts. Ensemble counts an image only if it is
classified correctly clean and under each of FGSM, PGD-20, PGD-100 and C&W in the table (the paper's set; AutoAttack
and the others are not part of it). TI-FGSM and DI-FGSM are crafted on
`--source` (a naturally trained model) and tested on MODEL. `adaptive` runs the attacks designed against FSR
(fsr_models.evaluation.adaptive): PGD-20 (cross-entropy and C&W margin) and APGD-CE / APGD-DLR through a softened mask
at temperatures from 2x to 1000x tau, a feature-space attack, transfer from the twin (the zoo's same network without
FSR, or with it for a plain model: `--twin`, by default the sibling folder `<other architecture>.<tag>` of a zoo
folder) and from the model's own w/o Rec ablation; on CAS and CIFS networks, PGD against their masks (their joint
loss, masks fixed to the true class's or to the likeliest wrong class's, the auxiliary heads first, CIFS's
relevance map) and transfer from the plain twin; each the per-image worst case with PGD-20, and the adaptive
ensemble over every attack that ran; the report gives each candidate's accuracy and, per attack, the images it fools
that PGD-20 leaves standing. `apgd_ce` is AutoAttack's first attack alone, where the standard version would take
too long. After an AutoAttack run its warning flags (randomness, zero gradients, Square beyond the white-box
attacks, ...) fail the sanity check on the same symptom, and the report's verdict says "unreliable" when any check
failed. The first n test images of the data folder are evaluated ('sample': the 512 shipped with the package); the
folder is never created or downloaded into without `--download`. `--curve` (and `--sanity`, which checks it) sweeps eps
for a plot of accuracy against eps. The report goes to --out (default eval/), which may not hold an earlier report
unless --overwrite replaces it. User errors end in one line `error: ...` and exit code 2; a failed check ends in exit
code 4.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from fsr_models.cli import HelpFormatter, Parser, eps_value, positive_int
from fsr_models.data import DATA_DIR_ENV, data_source, load_dataset, to_float
from fsr_models.defenses import aux_defense
from fsr_models.evaluation.checks import FSR_CHECK, sanity_checks, verdict, with_autoattack_flags
from fsr_models.evaluation.features import check_feature_analysis, feature_analysis
from fsr_models.evaluation.plot import plot_curve
from fsr_models.evaluation.protocol import (
    ADAPTIVE,
    ATTACKS,
    AUTOATTACKS,
    CURVE_ATTACK,
    evaluate_attacks,
    robustness_curve,
)
from fsr_models.evaluation.report import make_report, markdown, model_index
from fsr_models.facts.datasets import DATASETS
from fsr_models.facts.networks import twin_name
from fsr_models.facts.paper import PAPER_EPS
from fsr_models.fsr import fsr_health
from fsr_models.fsr.fsr_core import FSR
from fsr_models.hub.folders import load_any_model
from fsr_models.hub.weight_files import zoo_name

REPORT_FILES = ("report.json", "report.md", "robustness_curve.png")  # what a run writes into --out
CURVE_FILE = REPORT_FILES[2]


def show_autoattack_progress() -> None:
    """pyautoattack logs which of its attacks runs and how many images each broke: show it, as the progress of a
    step that can take minutes per batch."""
    logger = logging.getLogger("auto-attack")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("AutoAttack: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def device_value(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA devices")
    return device


def out_folder(text: str) -> Path:
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return Path(text)


def default_twin(model: str) -> str | None:
    """The zoo's counterpart of MODEL (with FSR <-> plain, same tag) where MODEL is a zoo folder
    `<architecture>.<tag>` whose sibling folder holds it; None otherwise."""
    path = Path(model.removeprefix("local-dir:"))
    twin = twin_name(path.name) if "." in path.name else None
    return str(path.with_name(twin)) if twin and path.is_dir() and path.with_name(twin).is_dir() else None


def adaptive_attacks(requested: list[str], model, twin) -> tuple[list[str], dict[str, str]]:
    """The attack list with `adaptive` replaced by the adaptive attacks that apply to this model (those on FSR's mask
    and its w/o Rec ablation need FSR modules with a mask, i.e. a Separation stage; the transfer from the twin needs
    one), and those of `adaptive` that do not apply, with why (the report says so: the adaptive ensemble is then over
    fewer attacks); one named that cannot run is a ValueError."""
    fsr_modules = [m for m in model.modules() if isinstance(m, FSR)]
    has_mask = bool(fsr_modules) and all(m.separation_net is not None for m in fsr_modules)
    why_not = {
        "mask_surrogate": None if has_mask else "the model has no FSR mask (FSR with a Separation stage)",
        "feature_space": None,
        "transfer_twin": None if twin is not None else "no twin (the same network with or without FSR): give --twin",
        "defense_masks": None if aux_defense(model) else "the model has no CAS or CIFS mask",
    }
    why_not["mask_surrogate_apgd"] = why_not["transfer_without_rec"] = why_not["mask_surrogate"]
    for name in requested:
        if name in ADAPTIVE and why_not[name]:
            raise ValueError(f"{name} cannot run on {type(model).__name__}: {why_not[name]}")
    expanded = [n for n in ADAPTIVE if not why_not[n]]
    attacks = list(dict.fromkeys(m for n in requested for m in (expanded if n == "adaptive" else [n])))
    skipped = {n: why for n, why in why_not.items() if why} if "adaptive" in requested else {}
    return attacks, skipped


def load_inputs(args) -> tuple:
    """The model, the transfer source and twin, the test images and the k-NN bank, checked against each other before
    hours of attacks; what does not fit is a ValueError or FileNotFoundError that says why."""
    model = load_any_model(args.model).to(args.device).eval()
    source = load_any_model(args.source).to(args.device).eval() if args.source else None
    twin = load_any_model(args.twin).to(args.device).eval() if args.twin else None
    images, labels, label_names = load_dataset(args.dataset, "test", args.data_dir, args.n, download=args.download)
    if len(images) < args.n:
        where = data_source(args.data_dir, "test") if str(args.data_dir) == "sample" else args.data_dir
        raise ValueError(f"--n {args.n}: only {len(images)} {args.dataset} test images in {where}")
    classes = len(label_names) if label_names else int(labels.max()) + 1
    for name, m in [(args.model, model), (args.source, source), (args.twin, twin)]:
        if m is None:
            continue
        cfg = getattr(m, "pretrained_cfg", {})
        if tuple(cfg.get("mean", (0, 0, 0))) != (0, 0, 0) or tuple(cfg.get("std", (1, 1, 1))) != (1, 1, 1):
            raise ValueError(
                f"{name} expects normalised input (mean {cfg.get('mean')}, std {cfg.get('std')}); attacks "
                "need a model that takes [0, 1] pixels: put the normalisation inside the model"
            )
        if m.num_classes != classes:
            raise ValueError(f"{name} has {m.num_classes} classes, {args.dataset} has {classes}")
    bank = None
    if args.features:
        check_feature_analysis(model)
        bank_x, bank_y, _ = load_dataset(args.dataset, "train", args.data_dir, 5000, download=args.download)
        bank = to_float(bank_x).to(args.device), bank_y.to(args.device)
    return model, source, twin, to_float(images).to(args.device), labels.to(args.device), bank


def build_parser() -> argparse.ArgumentParser:
    """The command line: MODEL and the options of the module's docstring."""
    parser = Parser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("model", help="a tag, hf-hub:<id>, a folder (or local-dir:<folder>), a run folder, a timm name")
    parser.add_argument("--dataset", default="cifar10", choices=sorted(DATASETS))
    parser.add_argument(
        "--data-dir",
        default=os.environ.get(DATA_DIR_ENV),
        help=f"data folder (${DATA_DIR_ENV} when not given); 'sample': the 512 shipped CIFAR-10 test images",
    )
    parser.add_argument("--download", action="store_true", help="let torchvision download the data set into --data-dir")
    parser.add_argument("--n", type=positive_int, default=1000, help="test images: the first n")
    parser.add_argument(
        "--attacks",
        nargs="+",
        default=["natural", "fgsm", "pgd20", "pgd100", "cw", "autoattack"],
        choices=(*ATTACKS, "adaptive"),
        help="the attacks, in the report's order ('adaptive': those designed against FSR that apply)",
    )
    parser.add_argument("--eps", type=eps_value, default=PAPER_EPS, help="L-inf radius in [0, 1], e.g. 8/255")
    parser.add_argument("--source", help="model to craft TI-FGSM / DI-FGSM on (a naturally trained one)")
    parser.add_argument(
        "--twin",
        help="model to craft transfer_twin on (default: the zoo's counterpart of MODEL with or without FSR, if found)",
    )
    parser.add_argument("--strong", action="store_true", help="random start and 5 restarts for the PGD attacks")
    parser.add_argument("--sanity", action="store_true", help="checks against gradient masking, and FSR's health")
    parser.add_argument("--curve", action="store_true", help=f"accuracy against eps ({CURVE_ATTACK}) as a PNG")
    parser.add_argument("--features", action="store_true", help="the FSR feature analysis (paper Table 5)")
    parser.add_argument("--batch-size", type=positive_int, default=200, help="images per attacked batch")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws (random starts, AutoAttack)")
    parser.add_argument(
        "--device", type=device_value, default="cuda" if torch.cuda.is_available() else "cpu", help="torch device"
    )
    parser.add_argument("--out", type=out_folder, default="eval", help="folder for report.json, report.md and the PNG")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the report files of an earlier evaluation in --out"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.attacks = list(dict.fromkeys(args.attacks))
    if {"ti_fgsm", "di_fgsm"} & set(args.attacks) and not args.source:
        parser.error(
            "argument --attacks: ti_fgsm and di_fgsm are transfer attacks: give --source, the model to craft them on"
        )
    if args.twin is None and ({"adaptive", "transfer_twin"} & set(args.attacks)):
        args.twin = default_twin(args.model)
    try:
        model, source, twin, x, y, bank = load_inputs(args)
        args.attacks, skipped = adaptive_attacks(args.attacks, model, twin)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    earlier = [args.out / name for name in REPORT_FILES if (args.out / name).exists()]  # after the inputs' checks
    if earlier and not args.overwrite:
        parser.error(
            f"--out {args.out} holds the report of an earlier evaluation ({', '.join(p.name for p in earlier)}): "
            "give another folder, or --overwrite to replace it"
        )

    for path in earlier:  # --overwrite: nothing of the earlier report stays beside the new one
        path.unlink()
    if set(AUTOATTACKS) & set(args.attacks) and not logging.getLogger("auto-attack").handlers:
        show_autoattack_progress()
    print(f"evaluating {args.model} on {len(x)} {args.dataset} test images; the report goes to {args.out}/", flush=True)
    for name, why in skipped.items():
        print(f"not run: {name} ({why})", flush=True)
    torch.manual_seed(args.seed)
    result = evaluate_attacks(model, x, y, args.attacks, args.eps, args.strong, source, args.batch_size, twin=twin)
    report = make_report(
        zoo_name(args.model),  # never a path of this machine
        args.dataset,
        data_source(args.data_dir, "test", args.dataset),
        len(x),
        args.eps,
        args.strong,
        result,
        args.source and zoo_name(args.source),
    )
    for n, other in (("ti_fgsm", args.source), ("di_fgsm", args.source), ("transfer_twin", args.twin)):
        if n in report["settings"]:
            report["settings"][n]["transfer_from"] = zoo_name(other)
    report["seed"] = args.seed
    if skipped:
        report["not_run"] = skipped
    health = fsr_health(model, x, args.batch_size)
    if health:
        report["fsr_health"] = health
    if args.curve or args.sanity:
        report["curve"] = robustness_curve(model, x, y, args.batch_size, result["accuracy"].get("natural"), True)
    if args.sanity:
        print("sanity checks (5 random restarts of PGD-20, input gradients, determinism)...", flush=True)
        report["sanity_checks"] = sanity_checks(model, x, y, result, args.eps, args.batch_size, report["curve"], health)
    if result["autoattack_warnings"]:
        report["sanity_checks"] = with_autoattack_flags(report.get("sanity_checks", []), result["autoattack_warnings"])
    if report.get("sanity_checks"):
        report["verdict"] = verdict(report["sanity_checks"])
    if args.features:
        print("feature analysis (paper Table 5)...", flush=True)
        report["features"] = feature_analysis(model, x, y, *bank, args.eps, args.batch_size)
    report["model_index"] = model_index(report, zoo_name(args.model))
    return write_report(report, args.out)


def write_report(report: dict, out: Path) -> int:
    """report.json, report.md and the curve's PNG in `out`, the table on stdout, each failed check on stderr; the
    command's exit code (4 when a check failed)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    if "curve" in report:
        plot_curve(report, out / CURVE_FILE)
    print(markdown(report))
    print(f"wrote {', '.join(str(out / n) for n in REPORT_FILES if (out / n).exists())}")
    failed = [c for c in report.get("sanity_checks", []) if not c["passed"]]
    for c in failed:
        why = "; ".join(c["detail"]) if c["check"] == FSR_CHECK else "robustness may be an artefact of masked gradients"
        why += "".join(f"; AutoAttack: {flag}" for flag in c.get("autoattack_flags", []))
        print(f"SANITY CHECK FAILED: {c['check']}: {why}", file=sys.stderr)
    return 4 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
