"""Checks that robustness is not an artefact of masked gradients (Athalye et al. 2018; Carlini et al. 2019), and
that every FSR module is active."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fsr_models.evaluation import attacks
from fsr_models.evaluation.protocol import batched, correct, pgd_settings, robustness_curve
from fsr_models.fsr import R_CONTRIBUTION_MIN, fsr_health, fsr_health_problems

FSR_CHECK = (
    f"every FSR module is active (R's contribution above {R_CONTRIBUTION_MIN:g}, S and R keep live units after "
    "each ReLU, mask not constant)"
)


DETERMINISM = "eval mode is deterministic (two forwards, identical logits)"
ZERO_GRADIENT = "share of images with a zero input gradient is below 1%"
# pyautoattack's warning flags (the reference implementation's checks.py), each with the check on its symptom
AUTOATTACK_FLAGS = (
    ("randomized defense", DETERMINISM),
    ("dynamic defense", DETERMINISM),
    ("zero gradient", ZERO_GRADIENT),
    ("Square Attack has decreased", "black-box Square breaks no image that AutoAttack's white-box attacks left"),
    ("probability distribution", "the model returns logits, not probabilities"),
    ("classes", "AutoAttack's targeted attacks fit the number of classes"),
)
NO_AUTOATTACK_FLAG = (
    "AutoAttack raised none of its warning flags (randomness, dynamic defense, zero gradients, probabilities, "
    "Square beyond the white-box attacks, classes)"
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
    check(ZERO_GRADIENT, zero < 0.01, zero)
    same = batched(lambda xb, yb: (model(xb) == model(xb)).flatten(1).all(1), x, y, batch_size).all().item()
    check(DETERMINISM, same, None)
    return checks


def with_autoattack_flags(checks: list[dict], warnings_by_attack: dict[str, list[str]]) -> list[dict]:
    """The checks with the warning flags pyautoattack raised (by attack: autoattack, apgd_ce) folded in: a flag fails
    the check on the same symptom, recording the flag under `autoattack_flags`, or adds that check where it did not
    run; AutoAttack runs without a flag add one passing check."""
    checks = [dict(c) for c in checks]
    flags = [f"{attack}: {message}" for attack, messages in warnings_by_attack.items() for message in messages]
    if warnings_by_attack and not flags:
        checks.append({"check": NO_AUTOATTACK_FLAG, "passed": True, "detail": None})
    for flag in flags:
        topic = next((name for key, name in AUTOATTACK_FLAGS if key in flag), "AutoAttack raised no other warning")
        check = next((c for c in checks if c["check"] == topic), None)
        if check is None:
            check = {"check": topic, "passed": True, "detail": None}
            checks.append(check)
        check["passed"] = False
        check.setdefault("autoattack_flags", []).append(flag)
    return checks


def verdict(checks: list[dict]) -> str:
    """'unreliable: <the failed checks>' when one failed, else how many passed."""
    failed = [c["check"] for c in checks if not c["passed"]]
    count = f"{len(checks)} check{'s' if len(checks) != 1 else ''}"
    return f"unreliable: {'; '.join(failed)}" if failed else f"no check failed ({count})"
