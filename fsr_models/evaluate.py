"""Robustness evaluation: the paper's white-box table, AutoAttack, black-box attacks, checks against gradient masking
and the FSR feature analysis (Table 5), written as a JSON report and a Markdown table.

    python -m fsr_models.evaluate MODEL --data-dir DIR|sample [--download] [--dataset cifar10] [--n 1000]
        [--attacks natural fgsm pgd20 pgd100 cw autoattack] [--eps 8/255] [--source MODEL] [--strong] [--sanity]
        [--curve] [--features] [--out DIR]

MODEL is a registered tag (`resnet18_fsr.at_cifar10`), `hf-hub:<id>`, a folder in the zoo layout (also as
`local-dir:<folder>`; a training run's `model/` or `best/`), a training run folder, or any timm model name (`resnet18`
evaluates a plain timm model, which must take [0, 1] pixels). The paper's protocol is the default: eps 8/255, eval
mode, no random start, step eps/10 (FGSM; PGD-20 and PGD-100 on cross-entropy; "C&W" = PGD-30 on the C&W margin with
kappa 50). `--strong` adds a random start and 5 restarts. Ensemble counts an image only if it is classified correctly
clean and under every white-box attack of the table. TI-FGSM and DI-FGSM are crafted on `--source` (a naturally
trained model) and tested on MODEL. The first n test images of the data folder are evaluated ('sample': the 512
shipped with the package); the folder is never created or downloaded into without `--download`.
`--curve` (and `--sanity`, which checks it) sweeps eps for a plot of accuracy against eps. User errors end in one
line `error: ...` and exit code 2; a failed sanity check ends in exit code 4.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import EvalResult
from huggingface_hub.errors import LocalEntryNotFoundError
from huggingface_hub.repocard_data import eval_results_to_model_index
from tqdm.auto import tqdm

from . import attacks
from .datasets import DATA_DIR_ENV, data_source, load_dataset, to_float
from .fsr import LIVE_UNITS_MIN, R_CONTRIBUTION_MIN, fsr_health, fsr_health_problems
from .hub import load_model
from .models._common import DATASETS

WHITE_BOX = ("natural", "fgsm", "pgd20", "pgd100", "cw")  # Ensemble is over these (the paper's set A, clean included)
COLUMNS = {  # report key -> column title, in the paper's order
    "natural": "Natural", "fgsm": "FGSM", "pgd20": "PGD-20", "pgd100": "PGD-100", "cw": "C&W", "ensemble": "Ensemble",
    "autoattack": "AutoAttack", "ti_fgsm": "TI-FGSM", "di_fgsm": "DI-FGSM", "nattack": "NAttack",
}  # fmt: skip
ATTACKS = tuple(k for k in COLUMNS if k != "ensemble")
PAPER_EPS = 8 / 255
CURVE_EPS = (0, 2, 4, 8, 16, 32, 64, 128)  # in /255: the sweep of the curve and of the sanity checks
CURVE_ATTACK = "PGD-20, step eps/4, no random start"
FSR_CHECK = (f"every FSR module is active (R's contribution above {R_CONTRIBUTION_MIN:g}, S and R keep at least "
             f"{LIVE_UNITS_MIN:.0%} of their units, mask not constant)")  # fmt: skip


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


def robustness_curve(model, x, y, batch_size=200, natural=None, progress=False) -> dict:
    """Accuracy against eps, PGD-20 with step eps/4 and no random start at eps CURVE_EPS / 255: the data of the
    robustness plot and of the sanity checks on it. `natural`, the clean accuracy when already known, is eps 0."""
    def accuracy_at(e):
        if e == 0 and natural is not None:
            return natural
        steps = 20 if e else 0  # eps 0: the clean images
        pgd20 = lambda xb, yb: attacks.pgd(model, xb, yb, e / 255, e / 255 / 4, steps, random_start=False)  # noqa: E731
        return batched(lambda xb, yb: correct(model, pgd20(xb, yb), yb), x, y, batch_size).float().mean().item()

    start = time.perf_counter()
    accuracy = [accuracy_at(e) for e in tqdm(CURVE_EPS, desc="robustness curve", disable=not progress)]
    return {"attack": CURVE_ATTACK, "images": len(x), "eps": [e / 255 for e in CURVE_EPS], "accuracy": accuracy,
            "seconds": time.perf_counter() - start}  # fmt: skip


def fsr_active_check(health: dict) -> dict:
    """The sanity check on `fsr_health`'s figures: a dead part of FSR is no gradient masking, but the network is then
    not the paper's FSR (a dead Recalibration Net passes f- on unchanged)."""
    problems = fsr_health_problems(health)
    return {"check": FSR_CHECK, "passed": not problems, "detail": problems}


def sanity_checks(model, x, y, result, eps, batch_size=200, curve=None, health=None) -> list[dict]:
    """Checks that robustness is not an artefact of masked gradients (Athalye et al.; Carlini et al. 2019), and that
    every FSR module is active. `curve` (robustness_curve) and `health` (fsr_health) are computed when not given."""
    checks, acc, tol = [], result["accuracy"], 1.5 / math.sqrt(len(x)) / 2  # about 1.5 standard errors at 50%

    def check(name, passed, detail):
        checks.append({"check": name, "passed": bool(passed), "detail": detail})

    def accuracy_under(attack):
        return batched(lambda xb, yb: correct(model, attack(xb, yb), yb), x, y, batch_size).float().mean().item()

    health = fsr_health(model, x, batch_size) if health is None else health
    if health:
        checks.append(fsr_active_check(health))
    curve = curve or robustness_curve(model, x, y, batch_size, acc.get("natural"))
    values = curve["accuracy"]
    check("accuracy never rises as eps grows (PGD-20, step eps/4)",
          all(b <= a + tol for a, b in zip(values, values[1:])),
          {f"{e * 255:g}/255": v for e, v in zip(curve["eps"], values)})  # fmt: skip
    check("accuracy is about 0 at eps 128/255", values[-1] <= 0.02, values[-1])
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


def protocol(report: dict) -> str:
    if report["strong"]:
        return "strong protocol (random start, 5 restarts)"
    if math.isclose(report["eps"], PAPER_EPS, abs_tol=1e-7):
        return "paper protocol"
    return "the paper's attacks at another eps than its 8/255"


def health_table(health: dict) -> list[str]:
    """fsr_health's figures per FSR module as a Markdown table."""
    pct = lambda h, key: f"{100 * h[key]:.0f}" if key in h else "-"  # noqa: E731
    lines = ["| FSR module | R contribution | S units live (%, ReLU 1 / 2) | R units live (%, ReLU 1 / 2) | mask mean "
             "| mask > 0.99 (%) | mask < 0.01 (%) |", "| --- " * 7 + "|"]  # fmt: skip
    for name, h in health.items():
        r = f"{h['r_contribution']:.3g}" if "r_contribution" in h else "-"
        mask = f"{h['mask_mean']:.3f}" if "mask_mean" in h else "-"
        lines.append(f"| {name} | {r} | {pct(h, 's_live_1')} / {pct(h, 's_live_2')} | {pct(h, 'r_live_1')} / "
                     f"{pct(h, 'r_live_2')} | {mask} | {pct(h, 'mask_above_0.99')} | {pct(h, 'mask_below_0.01')} |")
    return lines


def markdown(report: dict) -> str:
    lines = accuracy_table(report, row_label=report["model"])
    lines.append(f"\nAccuracy (%) on {report['dataset']} test images {report['indices']} (the first "
                 f"{report['images']}) of {report['data_source']}, eps {report['eps'] * 255:g}/255 (Linf), "
                 f"{protocol(report)}.")  # fmt: skip
    if "curve" in report:
        c = report["curve"]
        lines += ["", f"Robustness curve ({c['attack']}, {c['images']} images):", "",
                  "| eps (/255) | " + " | ".join(f"{e * 255:g}" for e in c["eps"]) + " |",
                  "| --- " * (len(c["eps"]) + 1) + "|",
                  "| accuracy (%) | " + " | ".join(f"{100 * a:.1f}" for a in c["accuracy"]) + " |"]  # fmt: skip
    if "fsr_health" in report:
        lines += ["", "FSR health on the clean images (`fsr_models.fsr.fsr_health`):", "",
                  *health_table(report["fsr_health"])]
    if "features" in report:
        lines += ["", "FSR feature analysis (paper Table 5): accuracy (%) when FSR passes on each feature; k-NN "
                  "accuracy of PGD-20 features among clean training features:", "",
                  "| FSR output | Natural | PGD-20 | 5-NN | 20-NN |", "| --- " * 5 + "|"]  # fmt: skip
        keys = ("natural", "pgd20", "knn5", "knn20")
        lines += [f"| {name} | " + " | ".join(f"{100 * v[k]:.2f}" for k in keys) + " |"
                  for name, v in report["features"].items()]  # fmt: skip
    if report.get("sanity_checks"):
        lines.append("")
    for c in report.get("sanity_checks", []):
        detail = "; ".join(c["detail"]) if isinstance(c["detail"], list) else c["detail"]
        detail = f" ({detail})" if detail not in (None, "", {}) else ""
        lines.append(f"- {'PASS' if c['passed'] else 'FAIL'}: {c['check']}{detail}")
    return "\n".join(lines) + "\n"


def plot_curve(report: dict, path: Path) -> None:
    """The robustness curve as a PNG: accuracy (%) against eps in /255 (symlog axis), the paper's 8/255 marked."""
    from matplotlib.figure import Figure  # no pyplot: nothing to display, Agg renders the file

    c = report["curve"]
    eps, acc = [e * 255 for e in c["eps"]], [100 * a for a in c["accuracy"]]
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(eps, acc, marker="o", label=c["attack"])
    for e, a in zip(eps, acc):
        ax.annotate(f"{a:.1f}", (e, a), textcoords="offset points", xytext=(3, 5), fontsize=8)
    paper = min(range(len(eps)), key=lambda i: abs(eps[i] - PAPER_EPS * 255))
    ax.axvline(PAPER_EPS * 255, color="tab:red", linestyle="--",
               label=f"the paper's eps 8/255: {acc[paper]:.1f}%")  # fmt: skip
    ax.set_xscale("symlog", linthresh=2)
    ax.set_xticks(eps, [f"{e:g}" for e in eps])
    ax.set_xlim(0, max(eps) * 1.3)
    ax.set_ylim(-2, 110)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("eps (x/255)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{report['model']}\n{report['dataset']} test images {report['indices']} ({c['images']} images)",
                 fontsize=10)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.savefig(path, dpi=120)


class Parser(argparse.ArgumentParser):
    """Every user error is one line on stderr, `error: ...`, and exit code 2 (no usage dump, no traceback)."""

    def error(self, message: str):
        self.exit(2, f"error: {' '.join(str(message).split())}\n")


def eps_value(text: str) -> float:
    """An L-inf radius on [0, 1] pixels: '8/255', '0.0314' or '0'."""
    try:
        return attacks.pixel_fraction(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1: give a whole number >= 1")
    return value


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


def load_any(source: str) -> torch.nn.Module:
    """A zoo model (tag, hf-hub id, folder or local-dir:<folder>, training run folder) or any timm model name.
    What a user may get wrong (a missing folder, an unknown or uncached name) is a ValueError that says so."""
    path = Path(source.removeprefix("local-dir:"))
    if source.startswith("local-dir:") and not path.is_dir():
        raise ValueError(f"{source}: {path} is not a folder")
    if path.is_dir() and (path / "model").is_dir() and not (path / "config.json").exists():
        path = path / "model" if (path / "model" / "config.json").exists() else path / "best"
    if path.is_dir():
        return load_model(path)
    try:
        return load_model(source)  # pretrained: a model name without weights fails with a message that says so
    except LocalEntryNotFoundError as e:
        raise ValueError(f"{source}: its pretrained weights are not in the local cache and the Hub cannot be reached "
                         "(no network, or HF_HUB_OFFLINE is set): load it once while online, or give a folder") from e
    except RuntimeError as e:  # timm: an unknown model name, or a tag without published weights
        raise ValueError(f"{source}: {e} (MODEL is a registered tag, hf-hub:<id>, a zoo folder or local-dir:<folder>, "
                         "a training run folder or a timm model name)") from e


def load_inputs(args) -> tuple:
    """The model, the transfer source, the test images and the k-NN bank, checked against each other before hours of
    attacks; what does not fit is a ValueError or FileNotFoundError that says why."""
    model = load_any(args.model).to(args.device).eval()
    source = load_any(args.source).to(args.device).eval() if args.source else None
    images, labels, label_names = load_dataset(args.dataset, "test", args.data_dir, args.n, download=args.download)
    if len(images) < args.n:
        raise ValueError(f"--n {args.n}: only {len(images)} {args.dataset} test images in "
                         f"{data_source(args.data_dir, 'test')}")  # fmt: skip
    classes = len(label_names) if label_names else int(labels.max()) + 1
    for name, m in [(args.model, model)] + ([(args.source, source)] if source is not None else []):
        cfg = getattr(m, "pretrained_cfg", {})
        if tuple(cfg.get("mean", (0, 0, 0))) != (0, 0, 0) or tuple(cfg.get("std", (1, 1, 1))) != (1, 1, 1):
            raise ValueError(f"{name} expects normalised input (mean {cfg.get('mean')}, std {cfg.get('std')}); attacks "
                             "need a model that takes [0, 1] pixels: put the normalisation inside the model")
        if m.num_classes != classes:
            raise ValueError(f"{name} has {m.num_classes} classes, {args.dataset} has {classes}")
    bank = None
    if args.features:
        check_feature_analysis(model)
        bank_x, bank_y, _ = load_dataset(args.dataset, "train", args.data_dir, 5000, download=args.download)
        bank = to_float(bank_x).to(args.device), bank_y.to(args.device)
    return model, source, to_float(images).to(args.device), labels.to(args.device), bank


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a tag, hf-hub:<id>, a folder (or local-dir:<folder>), a run folder, a timm name")
    parser.add_argument("--dataset", default="cifar10", choices=sorted(DATASETS))
    parser.add_argument("--data-dir", default=os.environ.get(DATA_DIR_ENV),
                        help=f"data folder (default ${DATA_DIR_ENV}); 'sample': the 512 shipped CIFAR-10 test images")
    parser.add_argument("--download", action="store_true", help="let torchvision download the data set into --data-dir")
    parser.add_argument("--n", type=positive_int, default=1000, help="test images: the first n (default 1000)")
    parser.add_argument("--attacks", nargs="+", default=["natural", "fgsm", "pgd20", "pgd100", "cw", "autoattack"],
                        choices=ATTACKS)  # fmt: skip
    parser.add_argument("--eps", type=eps_value, default=PAPER_EPS, help="L-inf radius in [0, 1], e.g. 8/255 (default)")
    parser.add_argument("--source", help="model to craft TI-FGSM / DI-FGSM on (a naturally trained one)")
    parser.add_argument("--strong", action="store_true", help="random start and 5 restarts for the PGD attacks")
    parser.add_argument("--sanity", action="store_true", help="checks against gradient masking, and FSR's health")
    parser.add_argument("--curve", action="store_true", help=f"accuracy against eps ({CURVE_ATTACK}) as a PNG")
    parser.add_argument("--features", action="store_true", help="the FSR feature analysis (paper Table 5)")
    parser.add_argument("--batch-size", type=positive_int, default=200)
    parser.add_argument("--device", type=device_value, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=out_folder, default="eval", help="folder for report.json, report.md and the PNG")
    args = parser.parse_args(argv)
    args.attacks = list(dict.fromkeys(args.attacks))
    if {"ti_fgsm", "di_fgsm"} & set(args.attacks) and not args.source:
        parser.error("argument --attacks: ti_fgsm and di_fgsm are transfer attacks: give --source, the model to craft "
                     "them on")  # fmt: skip
    try:
        model, source, x, y, bank = load_inputs(args)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))

    result = evaluate(model, x, y, args.attacks, args.eps, args.strong, source, args.batch_size)
    report = {"model": args.model, "dataset": args.dataset, "data_source": data_source(args.data_dir, "test"),
              "indices": f"0:{len(x)}", "images": len(x), "eps": args.eps, "strong": args.strong,
              "accuracy": result["accuracy"], "settings": result["settings"], "ensemble_over": result["ensemble_over"],
              "seconds": result["seconds"], "source": args.source}  # fmt: skip
    if source is not None:
        for n in ("ti_fgsm", "di_fgsm"):
            report["settings"].get(n, {})["transfer_from"] = args.source
    health = fsr_health(model, x, args.batch_size)
    if health:
        report["fsr_health"] = health
    if args.curve or args.sanity:
        report["curve"] = robustness_curve(model, x, y, args.batch_size, result["accuracy"].get("natural"), True)
    if args.sanity:
        report["sanity_checks"] = sanity_checks(model, x, y, result, args.eps, args.batch_size, report["curve"], health)
    if args.features:
        report["features"] = feature_analysis(model, x, y, *bank, args.eps, args.batch_size)
    report["model_index"] = model_index(report, args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    (args.out / "report.md").write_text(markdown(report))
    if "curve" in report:
        plot_curve(report, args.out / "robustness_curve.png")
    print(markdown(report))
    failed = [c for c in report.get("sanity_checks", []) if not c["passed"]]
    for c in failed:
        why = "; ".join(c["detail"]) if c["check"] == FSR_CHECK else "robustness may be an artefact of masked gradients"
        print(f"SANITY CHECK FAILED: {c['check']}: {why}", file=sys.stderr)
    return 4 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
