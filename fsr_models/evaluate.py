"""Robustness evaluation: the paper's white-box table, AutoAttack, black-box attacks, checks against gradient masking
and the FSR feature analysis (Table 5), written as a JSON report and a Markdown table.

    python -m fsr_models.evaluate MODEL [--dataset cifar10] [--data-dir DIR] [--n 1000]
        [--attacks natural fgsm pgd20 pgd100 cw autoattack] [--source MODEL] [--strong] [--sanity] [--features]
        [--out DIR]

MODEL is a registered tag (`resnet18_fsr.at_cifar10`), `hf-hub:<id>`, a folder in the zoo layout (a training run's
`model/` or `best/`), a training run folder, or any timm model name (`resnet18` evaluates a plain timm model, which
must take [0, 1] pixels). The paper's protocol is the default: eps 8/255, eval mode, no random start, step eps/10
(FGSM; PGD-20 and PGD-100 on cross-entropy; "C&W" = PGD-30 on the C&W margin with kappa 50). `--strong` adds a random
start and 5 restarts. Ensemble counts an image only if it is classified correctly clean and under every white-box
attack of the table. TI-FGSM and DI-FGSM are crafted on `--source` (a naturally trained model) and tested on MODEL.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import EvalResult
from huggingface_hub.repocard_data import eval_results_to_model_index
from tqdm.auto import tqdm

from . import attacks
from .datasets import load_dataset, to_float
from .hub import load_model

WHITE_BOX = ("natural", "fgsm", "pgd20", "pgd100", "cw")  # Ensemble is over these (the paper's set A, clean included)
COLUMNS = {  # report key -> column title, in the paper's order
    "natural": "Natural", "fgsm": "FGSM", "pgd20": "PGD-20", "pgd100": "PGD-100", "cw": "C&W", "ensemble": "Ensemble",
    "autoattack": "AutoAttack", "ti_fgsm": "TI-FGSM", "di_fgsm": "DI-FGSM", "nattack": "NAttack",
}  # fmt: skip
ATTACKS = tuple(k for k in COLUMNS if k != "ensemble")


def attack_settings(name: str, eps: float, strong: bool) -> dict:
    """What each attack runs with: recorded in the report beside its number."""
    restarts = 5 if strong else 1
    pgd = lambda steps, loss: dict(attack="PGD", steps=steps, step_size=eps / 10, loss=loss, random_start=strong,  # noqa: E731
                                   restarts=restarts)  # fmt: skip
    return {
        "natural": dict(attack="none"),
        "fgsm": dict(attack="FGSM", step_size=eps),
        "pgd20": pgd(20, "cross-entropy"),
        "pgd100": pgd(100, "cross-entropy"),
        "cw": pgd(30, "C&W margin, kappa 50"),
        "autoattack": dict(attack="AutoAttack", version="standard", code="pyautoattack"),
        "ti_fgsm": dict(attack="TI-FGSM", kernel=7, sigma=3.0),
        "di_fgsm": dict(attack="DI-FGSM", steps=10, p=0.5),
        "nattack": dict(attack="NAttack", population=100, sigma=0.1, lr=0.02, max_queries=10_000),
    }[name] | {"eps": eps, "norm": "Linf"}


def run_attack(name, model, x, y, eps, strong, source=None):
    """Adversarial examples of one attack on one batch (x itself for 'natural'), plus extra per-image info."""
    s = attack_settings(name, eps, strong)
    if name == "natural":
        return x, {}
    if name == "fgsm":
        return attacks.fgsm(model, x, y, eps), {}
    if name in ("pgd20", "pgd100", "cw"):
        loss = attacks.cw_margin_loss(50.0) if name == "cw" else None
        return attacks.pgd_restarts(model, x, y, eps, s["step_size"], s["steps"], s["restarts"], strong, loss), {}
    if name == "autoattack":
        return attacks.autoattack(model, x, y, eps, batch_size=len(x)), {}
    if name in ("ti_fgsm", "di_fgsm"):
        if source is None:
            raise ValueError(f"{name} is a transfer attack: give --source, the model to craft it on")
        return (attacks.ti_fgsm if name == "ti_fgsm" else attacks.di_fgsm)(source, x, y, eps), {}
    if name == "nattack":
        x_adv, queries = attacks.nattack(model, x, y, eps)
        return x_adv, {"queries": queries}
    raise ValueError(f"unknown attack {name!r}; choose from {ATTACKS}")


@torch.no_grad()
def correct(model, x, y) -> torch.Tensor:
    return model(x).argmax(1) == y


def batched(fn, x, y, batch_size):
    """fn(x, y) over batches of x and y, concatenated (keeps memory bounded for 10,000 images)."""
    return torch.cat([fn(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate(model, x, y, names, eps=8 / 255, strong=False, source=None, batch_size=200, progress=True) -> dict:
    """Per-image correctness under each attack, accuracies, Ensemble, and what each attack ran with."""
    model.eval()
    if source is not None:
        source.eval()
    flags = {n: torch.zeros(len(x), dtype=torch.bool) for n in names}
    queries = []
    seconds = {n: 0.0 for n in names}
    batches = range(0, len(x), batch_size)
    for start in tqdm(batches, desc="evaluating", disable=not progress):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        for n in names:
            t = time.perf_counter()
            x_adv, extra = run_attack(n, model, xb, yb, eps, strong, source)
            attacks.check_bounds(x_adv, xb, eps)
            flags[n][start : start + len(xb)] = correct(model, x_adv, yb).cpu()
            queries += extra.get("queries", torch.empty(0)).tolist()
            seconds[n] += time.perf_counter() - t
    accuracy = {n: flags[n].float().mean().item() for n in names}
    white = [n for n in WHITE_BOX if n in names]
    if len(white) > 1:
        accuracy["ensemble"] = torch.stack([flags[n] for n in white]).all(0).float().mean().item()
    settings = {n: attack_settings(n, eps, strong) for n in names}
    if queries:  # over the images NAttack broke (those it could not break spent the whole budget)
        broke = [q for q, ok in zip(queries, flags["nattack"].tolist()) if not ok]
        settings["nattack"]["mean_queries_of_successes"] = sum(broke) / len(broke) if broke else None
    return {"accuracy": accuracy, "settings": settings, "seconds": seconds, "flags": flags, "strong": strong,
            "ensemble_over": white if "ensemble" in accuracy else []}  # fmt: skip


def input_gradient_is_zero(model, x, y) -> torch.Tensor:
    """Per image, whether its cross-entropy input gradient is exactly zero (a sign of masked gradients)."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return grad.flatten(1).abs().amax(1) == 0


def sanity_checks(model, x, y, result, eps, batch_size=200) -> list[dict]:
    """Checks that robustness is not an artefact of masked gradients (Athalye et al.; Carlini et al. 2019)."""
    checks, acc, tol = [], result["accuracy"], 1.5 / math.sqrt(len(x)) / 2  # about 1.5 standard errors at 50%

    def check(name, passed, detail):
        checks.append({"check": name, "passed": bool(passed), "detail": detail})

    def accuracy_under(attack):
        return batched(lambda xb, yb: correct(model, attack(xb, yb), yb), x, y, batch_size).float().mean().item()

    sweep = {e: accuracy_under(lambda xb, yb, e=e: attacks.pgd(model, xb, yb, e / 255, e / 255 / 4, 20, False))
             for e in (2, 4, 8, 16, 32, 64, 128)}  # fmt: skip
    sweep = {0: acc.get("natural", accuracy_under(lambda xb, yb: xb)), **sweep}
    values = list(sweep.values())
    check("accuracy never rises as eps grows (PGD-20, step eps/4)",
          all(b <= a + tol for a, b in zip(values, values[1:])), {f"{e}/255": v for e, v in sweep.items()})  # fmt: skip
    check("accuracy is about 0 at eps 128/255", sweep[128] <= 0.02, sweep[128])
    if "pgd20" in acc and "pgd100" in acc:
        check("more PGD steps never help the model (PGD-100 <= PGD-20)", acc["pgd100"] <= acc["pgd20"] + tol,
              {"pgd20": acc["pgd20"], "pgd100": acc["pgd100"]})  # fmt: skip
    if "pgd20" in acc:
        # Five independent random starts (not the protocol's start): they should not help the model, and a large
        # drop below the fixed-start PGD-20 would mean the clean point hides the gradient (masking).
        r = accuracy_under(lambda xb, yb: attacks.pgd_restarts(model, xb, yb, eps, eps / 10, 20, 5, True))
        detail = {"pgd20": acc["pgd20"], "pgd20_5_random_restarts": r}
        check("random restarts never help the model (<= PGD-20)", r <= acc["pgd20"] + tol, detail)
        check("random restarts do not break many more images (PGD-20 - restarts <= 5 points)",
              acc["pgd20"] - r <= 0.05 + tol, detail)  # fmt: skip
    if "ensemble" in acc:  # a consistency check of the report itself
        worst = min(acc[n] for n in result["ensemble_over"])
        check("Ensemble <= every single attack", acc["ensemble"] <= worst, {"ensemble": acc["ensemble"], "min": worst})
    if "autoattack" in acc and "pgd20" in acc:
        check("AutoAttack <= PGD-20 (within noise)", acc["autoattack"] <= acc["pgd20"] + tol,
              {"autoattack": acc["autoattack"], "pgd20": acc["pgd20"]})  # fmt: skip
    white = min((acc[n] for n in ("pgd20", "pgd100", "cw", "autoattack") if n in acc), default=None)
    for n in ("ti_fgsm", "di_fgsm", "nattack"):
        if n in acc and white is not None:
            check(f"black-box {n} >= white-box", acc[n] + tol >= white, {n: acc[n], "white_box_min": white})
    zero = batched(lambda xb, yb: input_gradient_is_zero(model, xb, yb), x, y, batch_size).float().mean().item()
    check("share of images with a zero input gradient is below 1%", zero < 0.01, zero)
    same = batched(lambda xb, yb: (model(xb) == model(xb)).flatten(1).all(1), x, y, batch_size).all().item()
    check("eval mode is deterministic (two forwards, identical logits)", same, None)
    return checks


def knn_accuracy(features, labels, bank, bank_labels, k, temperature=0.1, num_classes=None) -> float:
    """Weighted k-NN (Wu et al. 2018): vote of the k most cosine-similar bank features, weighted exp(cos / T)."""
    sim = F.normalize(features, dim=1) @ F.normalize(bank, dim=1).T
    top, idx = sim.topk(min(k, len(bank)), dim=1)
    votes = torch.zeros(len(features), num_classes or int(bank_labels.max()) + 1)
    votes.scatter_add_(1, bank_labels[idx], torch.exp(top / temperature))
    return (votes.argmax(1) == labels).float().mean().item()


def feature_analysis(model, x, y, bank_x, bank_y, eps, batch_size=200) -> dict:
    """Table 5: (a) accuracy when FSR passes on f+, f-, f~- or f~ (clean and PGD-20 crafted against that model);
    (b) weighted 5-NN and 20-NN accuracy of each feature of PGD-20 examples among clean features of `bank_x`."""
    check_feature_analysis(model)
    outputs = ("f_pos", "f_neg", "f_neg_recal", "f_tilde")
    pgd20 = lambda xb, yb: attacks.pgd(model, xb, yb, eps, eps / 10, 20, random_start=False)  # noqa: E731
    table = {}
    for output in outputs:
        model.set_fsr_output(output)
        table[output] = {
            "natural": batched(lambda xb, yb: correct(model, xb, yb), x, y, batch_size).float().mean().item(),
            "pgd20": batched(lambda xb, yb: correct(model, pgd20(xb, yb), yb), x, y, batch_size).float().mean().item(),
        }  # the model ends on f_tilde, the paper's

    def pooled_parts(xb, yb):  # the last FSR module's features, globally pooled: (4, batch, C)
        with torch.no_grad():
            p = model(xb, return_fsr=True).fsr_parts[-1]
        return torch.stack([f.mean(dim=(2, 3)) for f in (p.f_pos, p.f_neg, p.f_neg_recal, p.f_pos + p.f_neg_recal)])

    bank = torch.cat([pooled_parts(bank_x[i : i + batch_size], None)[3] for i in range(0, len(bank_x), batch_size)])
    adv = torch.cat([pooled_parts(pgd20(x[i : i + batch_size], y[i : i + batch_size]), None)
                     for i in range(0, len(x), batch_size)], dim=1)  # fmt: skip
    for j, output in enumerate(outputs):
        for k in (5, 20):
            table[output][f"knn{k}"] = knn_accuracy(adv[j], y, bank, bank_y, k, num_classes=model.num_classes)
    return table


def check_feature_analysis(model) -> None:
    fsr = getattr(model, "fsr_modules", lambda: [])()
    if not fsr or any(m.separation_net is None or m.recalibration_net is None for m in fsr):
        raise ValueError("--features needs an FSR network with both Separation and Recalibration (paper Table 5)")


# The data sets' ids and names on the Hub, for model-card metadata.
HUB_DATASETS = {"cifar10": ("uoft-cs/cifar10", "CIFAR-10"), "cifar100": ("uoft-cs/cifar100", "CIFAR-100"),
                "svhn": ("ufldl-stanford/svhn", "SVHN"), "tiny_imagenet": ("zh-plus/tiny-imagenet", "Tiny ImageNet")}


def column_title(name: str) -> str:
    """'pgd20' -> 'PGD-20'; also names the PGD-k of a training run's final test (any k)."""
    return COLUMNS.get(name) or f"PGD-{name.removeprefix('pgd')}"


def eval_results(report: dict) -> list[EvalResult]:
    """The report as Hub eval results (model-card metadata): one accuracy per attack, with its settings."""
    hub_id, dataset_name = HUB_DATASETS.get(report["dataset"], (report["dataset"], report["dataset"]))
    split = "validation" if report["dataset"] == "tiny_imagenet" else "test"  # Tiny ImageNet is tested on its val
    return [
        EvalResult(task_type="image-classification", task_name="Image Classification",
                   dataset_type=hub_id, dataset_name=dataset_name,
                   dataset_split=f"{split}[:{report['images']}]", metric_type="accuracy",
                   metric_name=f"{column_title(n)} accuracy", metric_value=round(100 * v, 2),
                   metric_args=report["settings"].get(n, {"over": report["ensemble_over"]}))
        for n, v in report["accuracy"].items()
    ]  # fmt: skip


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


def markdown(report: dict) -> str:
    lines = accuracy_table(report, row_label=report["model"])
    lines.append(f"\nAccuracy (%) on the first {report['images']} {report['dataset']} test images, eps "
                 f"{report['eps'] * 255:g}/255 (Linf), {'strong protocol' if report['strong'] else 'paper protocol'}.")
    for c in report.get("sanity_checks", []):
        lines.append(f"- {'PASS' if c['passed'] else 'FAIL'}: {c['check']} ({c['detail']})")
    return "\n".join(lines) + "\n"


def load_any(source: str) -> torch.nn.Module:
    """A zoo model (tag, hf-hub id, folder, training run folder) or any timm model name."""
    path = Path(source)
    if path.is_dir() and (path / "model").is_dir() and not (path / "config.json").exists():
        path = path / "model" if (path / "model" / "config.json").exists() else path / "best"
    if path.is_dir():
        return load_model(path)
    return load_model(source)  # pretrained: a model name without weights fails with a message that says so


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-dir", help="data folder (default $FSR_DATA_DIR; 'sample' for the shipped CIFAR-10)")
    parser.add_argument("--n", type=int, default=1000, help="test images (the first n)")
    parser.add_argument("--attacks", nargs="+", default=["natural", "fgsm", "pgd20", "pgd100", "cw", "autoattack"],
                        choices=ATTACKS)  # fmt: skip
    parser.add_argument("--eps", type=float, default=8 / 255)
    parser.add_argument("--source", help="model to craft TI-FGSM / DI-FGSM on (a naturally trained one)")
    parser.add_argument("--strong", action="store_true", help="random start and 5 restarts for the PGD attacks")
    parser.add_argument("--sanity", action="store_true", help="run the checks against gradient masking")
    parser.add_argument("--features", action="store_true", help="the FSR feature analysis (paper Table 5)")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="eval", help="folder for report.json and report.md")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    model = load_any(args.model).to(device).eval()
    source = load_any(args.source).to(device).eval() if args.source else None
    images, labels, label_names = load_dataset(args.dataset, "test", args.data_dir, args.n)
    # Fail before hours of attacks, not after them.
    cfg = getattr(model, "pretrained_cfg", {})
    if tuple(cfg.get("mean", (0, 0, 0))) != (0, 0, 0) or tuple(cfg.get("std", (1, 1, 1))) != (1, 1, 1):
        raise ValueError(f"{args.model} expects normalised input (mean {cfg.get('mean')}, std {cfg.get('std')}); "
                         "attacks need a model that takes [0, 1] pixels: put the normalisation inside the model")
    classes = len(label_names) if label_names else int(labels.max()) + 1
    if model.num_classes != classes:
        raise ValueError(f"{args.model} has {model.num_classes} classes, {args.dataset} has {classes}")
    if len(images) < args.n:
        print(f"note: {len(images)} test images available, not {args.n}", file=sys.stderr)
    if args.features:
        check_feature_analysis(model)
        bank_x, bank_y, _ = load_dataset(args.dataset, "train", args.data_dir, 5000)
    x, y = to_float(images).to(device), labels.to(device)
    result = evaluate(model, x, y, args.attacks, args.eps, args.strong, source, args.batch_size)
    report = {"model": args.model, "dataset": args.dataset, "images": len(x), "eps": args.eps, "strong": args.strong,
              "accuracy": result["accuracy"], "settings": result["settings"], "ensemble_over": result["ensemble_over"],
              "seconds": result["seconds"], "source": args.source}  # fmt: skip
    if source is not None:
        for n in ("ti_fgsm", "di_fgsm"):
            report["settings"].get(n, {})["transfer_from"] = args.source
    if args.sanity:
        report["sanity_checks"] = sanity_checks(model, x, y, result, args.eps, args.batch_size)
    if args.features:
        report["features"] = feature_analysis(model, x, y, to_float(bank_x).to(device), bank_y.to(device), args.eps,
                                              args.batch_size)  # fmt: skip
    report["model_index"] = model_index(report, args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    print(markdown(report))
    failed = [c["check"] for c in report.get("sanity_checks", []) if not c["passed"]]
    for name in failed:
        print(f"SANITY CHECK FAILED: {name}: robustness may be an artefact of masked gradients", file=sys.stderr)
    return 4 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
