"""Checks that robustness is not an artefact of masked gradients (Athalye et al. 2018; Carlini et al. 2019), and
that every FSR module is active."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import attacks
from ..fsr import LIVE_UNITS_MIN, R_CONTRIBUTION_MIN, fsr_health, fsr_health_problems
from .protocol import batched, correct, pgd_settings, robustness_curve

FSR_CHECK = (
    f"every FSR module is active (R's contribution above {R_CONTRIBUTION_MIN:g}, S and R keep at least "
    f"{LIVE_UNITS_MIN:.0%} of their units, mask not constant)"
)


def input_gradient_is_zero(model, x, y) -> torch.Tensor:
    """Per image, whether its cross-entropy input gradient is exactly zero (a sign of masked gradients)."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return grad.flatten(1).abs().amax(1) == 0


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
    check(
        "accuracy never rises as eps grows (PGD-20, step eps/4)",
        all(b <= a + tol for a, b in zip(values, values[1:])),
        {f"{e * 255:g}/255": v for e, v in zip(curve["eps"], values)},
    )
    check("accuracy is about 0 at eps 128/255", values[-1] <= 0.02, values[-1])
    if "pgd20" in acc and "pgd100" in acc:
        check(
            "more PGD steps never help the model (PGD-100 <= PGD-20)",
            acc["pgd100"] <= acc["pgd20"] + tol,
            {"pgd20": acc["pgd20"], "pgd100": acc["pgd100"]},
        )
    if "pgd20" in acc:
        # Five independent random starts (not the protocol's start): they should not help the model, and a large
        # drop below the fixed-start PGD-20 would mean the clean point hides the gradient (masking).
        s = pgd_settings(20, eps, strong=True)  # a random start and 5 restarts
        restarts = (s["step_size"], s["steps"], s["restarts"], s["random_start"])
        r = accuracy_under(lambda xb, yb: attacks.pgd_restarts(model, xb, yb, eps, *restarts))
        detail = {"pgd20": acc["pgd20"], "pgd20_5_random_restarts": r}
        check("random restarts never help the model (<= PGD-20)", r <= acc["pgd20"] + tol, detail)
        check(
            "random restarts do not break many more images (PGD-20 - restarts <= 5 points)",
            acc["pgd20"] - r <= 0.05 + tol,
            detail,
        )
    if "ensemble" in acc:  # a consistency check of the report itself
        worst = min(acc[n] for n in result["ensemble_over"])
        check("Ensemble <= every single attack", acc["ensemble"] <= worst, {"ensemble": acc["ensemble"], "min": worst})
    if "autoattack" in acc and "pgd20" in acc:
        check(
            "AutoAttack <= PGD-20 (within noise)",
            acc["autoattack"] <= acc["pgd20"] + tol,
            {"autoattack": acc["autoattack"], "pgd20": acc["pgd20"]},
        )
    white = min((acc[n] for n in ("pgd20", "pgd100", "cw", "autoattack") if n in acc), default=None)
    for n in ("ti_fgsm", "di_fgsm", "nattack"):
        if n in acc and white is not None:
            check(f"black-box {n} >= white-box", acc[n] + tol >= white, {n: acc[n], "white_box_min": white})
    zero = batched(lambda xb, yb: input_gradient_is_zero(model, xb, yb), x, y, batch_size).float().mean().item()
    check("share of images with a zero input gradient is below 1%", zero < 0.01, zero)
    same = batched(lambda xb, yb: (model(xb) == model(xb)).flatten(1).all(1), x, y, batch_size).all().item()
    check("eval mode is deterministic (two forwards, identical logits)", same, None)
    return checks
