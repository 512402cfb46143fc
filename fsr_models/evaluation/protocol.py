"""The attack protocol: what each attack of a report runs with, running it on batches, per-image correctness,
the Ensemble, and accuracy against eps (the robustness curve)."""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from .. import attacks
from ..facts import PAPER_EPS

WHITE_BOX = ("natural", "fgsm", "pgd20", "pgd100", "cw")  # Ensemble is over these (the paper's set A, clean included)
# The attacks a report may hold, in the paper's column order (Ensemble, derived, goes after C&W).
ATTACKS = ("natural", "fgsm", "pgd20", "pgd100", "cw", "autoattack", "ti_fgsm", "di_fgsm", "nattack")
CURVE_EPS = (0, 2, 4, 8, 16, 32, 64, 128)  # in /255: the sweep of the curve and of the sanity checks
CURVE_ATTACK = "PGD-20, step eps/4, no random start"


def pgd_settings(steps: int, eps: float, strong: bool = False, loss: str = "cross-entropy", **extra) -> dict:
    """The paper's PGD: step eps/10, no random start (`strong`: a random start and 5 restarts)."""
    return dict(
        attack="PGD",
        steps=steps,
        step_size=eps / 10,
        loss=loss,
        random_start=strong,
        restarts=5 if strong else 1,
        **extra,
    ) | {"eps": eps, "norm": "Linf"}


def attack_settings(name: str, eps: float, strong: bool) -> dict:
    """What attack `name` runs with: `run_attack` calls it with exactly these values, and the report records them
    beside its number."""
    return {
        "natural": dict(attack="none"),
        "fgsm": dict(attack="FGSM", step_size=eps),
        "pgd20": pgd_settings(20, eps, strong),
        "pgd100": pgd_settings(100, eps, strong),
        "cw": pgd_settings(30, eps, strong, loss="C&W margin", kappa=50.0),
        "autoattack": dict(attack="AutoAttack", version="standard", code="pyautoattack"),
        "ti_fgsm": dict(attack="TI-FGSM", kernel=7, sigma=3.0),
        "di_fgsm": dict(attack="DI-FGSM", steps=10, p=0.5),
        "nattack": dict(attack="NAttack", population=100, sigma=0.1, lr=0.02, max_queries=10_000),
    }[name] | {"eps": eps, "norm": "Linf"}


def run_attack(name, model, x, y, eps, strong, source=None):
    """Adversarial examples of one attack on one batch (x itself for 'natural'), plus extra per-image info; every
    argument comes from `attack_settings`."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose from {ATTACKS}")
    s = attack_settings(name, eps, strong)
    if name == "natural":
        return x, {}
    if name == "fgsm":
        return attacks.pgd(model, x, y, eps, s["step_size"], 1, random_start=False), {}
    if s["attack"] == "PGD":
        loss = attacks.cw_margin_loss(s["kappa"]) if "kappa" in s else None
        return attacks.pgd_restarts(
            model, x, y, eps, s["step_size"], s["steps"], s["restarts"], s["random_start"], loss
        ), {}
    if name == "autoattack":
        return attacks.autoattack(model, x, y, eps, version=s["version"], batch_size=len(x)), {}
    if name in ("ti_fgsm", "di_fgsm") and source is None:
        raise ValueError(f"{name} is a transfer attack: give --source, the model to craft it on")
    if name == "ti_fgsm":
        return attacks.ti_fgsm(source, x, y, eps, kernel_size=s["kernel"], sigma=s["sigma"]), {}
    if name == "di_fgsm":
        return attacks.di_fgsm(source, x, y, eps, steps=s["steps"], p=s["p"]), {}
    x_adv, queries = attacks.nattack(
        model, x, y, eps, population=s["population"], sigma=s["sigma"], lr=s["lr"], max_queries=s["max_queries"]
    )
    return x_adv, {"queries": queries}


@torch.no_grad()
def correct(model, x, y) -> torch.Tensor:
    return model(x).argmax(1) == y


def batched(fn, x, y, batch_size):
    """fn(x, y) over batches of x and y, concatenated (keeps memory bounded for 10,000 images)."""
    return torch.cat([fn(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate_attacks(
    model, x, y, names, eps=PAPER_EPS, strong=False, source=None, batch_size=200, progress=True
) -> dict:
    """Per-image correctness under each attack, accuracies, Ensemble, and what each attack ran with."""
    model.eval()
    if source is not None:
        source.eval()
    flags = {n: torch.zeros(len(x), dtype=torch.bool) for n in names}
    queries = []
    seconds = {n: 0.0 for n in names}
    batches = range(0, len(x), batch_size)
    bar = tqdm(total=len(batches) * len(names), unit="attack", disable=not progress)  # rate and time left
    for i, start in enumerate(batches):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        for n in names:
            bar.set_description(f"{n}, batch {i + 1}/{len(batches)} of {len(xb)} images")
            t = time.perf_counter()
            x_adv, extra = run_attack(n, model, xb, yb, eps, strong, source)
            attacks.check_bounds(x_adv, xb, eps)
            flags[n][start : start + len(xb)] = correct(model, x_adv, yb).cpu()
            queries += extra.get("queries", torch.empty(0)).tolist()
            seconds[n] += time.perf_counter() - t
            bar.update()
    bar.close()
    accuracy = {n: flags[n].float().mean().item() for n in names}
    white = [n for n in WHITE_BOX if n in names]
    if len(white) > 1:
        accuracy["ensemble"] = torch.stack([flags[n] for n in white]).all(0).float().mean().item()
    settings = {n: attack_settings(n, eps, strong) for n in names}
    if queries:  # over the images NAttack broke (those it could not break spent the whole budget)
        broke = [q for q, ok in zip(queries, flags["nattack"].tolist()) if not ok]
        settings["nattack"]["mean_queries_of_successes"] = sum(broke) / len(broke) if broke else None
    return {
        "accuracy": accuracy,
        "settings": settings,
        "seconds": seconds,
        "flags": flags,
        "strong": strong,
        "ensemble_over": white if "ensemble" in accuracy else [],
    }


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
    return {
        "attack": CURVE_ATTACK,
        "images": len(x),
        "eps": [e / 255 for e in CURVE_EPS],
        "accuracy": accuracy,
        "seconds": time.perf_counter() - start,
    }
