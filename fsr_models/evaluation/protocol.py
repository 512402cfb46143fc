"""The attack protocol: what each attack of a report runs with, running it on batches, per-image correctness,
the Ensemble, and accuracy against eps (the robustness curve)."""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from fsr_models.evaluation import adaptive, attacks
from fsr_models.facts.paper import PAPER_EPS

WHITE_BOX = ("natural", "fgsm", "pgd20", "pgd100", "cw")  # Ensemble is over these (the paper's set A, clean included)
# Attacks designed against FSR, and against CAS's and CIFS's masks (fsr_models.evaluation.adaptive); each keeps the
# per-image worst case with PGD-20.
ADAPTIVE = (
    "mask_surrogate",
    "mask_surrogate_apgd",
    "feature_space",
    "transfer_twin",
    "transfer_without_rec",
    "defense_masks",
)
# The temperature factors T of the softened mask, sigmoid(r / (tau * T)): from near the test-time tau to far above it
SURROGATE_TEMPERATURES = [2.0, 10.0, 100.0, 1000.0]
# The attacks a report may hold, in the paper's column order (Ensemble, derived, goes after C&W; the adaptive
# ensemble, over every attack that ran, goes last).
ATTACKS = (
    "natural",
    "fgsm",
    "pgd20",
    "pgd100",
    "cw",
    "autoattack",
    "apgd_ce",
    "ti_fgsm",
    "di_fgsm",
    "nattack",
    *ADAPTIVE,
)
AUTOATTACKS = ("autoattack", "apgd_ce")  # pyautoattack's runs, whose warning flags the report records
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
        # AutoAttack's first attack alone (as in its standard version: 100 iterations, 1 restart), where the whole
        # standard version would take too long (CPU)
        "apgd_ce": dict(attack="AutoAttack's APGD-CE", version="custom", attacks=["apgd-ce"], code="pyautoattack"),
        "ti_fgsm": dict(attack="TI-FGSM", kernel=7, sigma=3.0),
        "di_fgsm": dict(attack="DI-FGSM", steps=10, p=0.5),
        "nattack": dict(attack="NAttack", population=100, sigma=0.1, lr=0.02, max_queries=10_000),
        "mask_surrogate": dict(
            attack="PGD-20 through a softened FSR mask (BPDA: the forward's mask, the gradient of "
            "sigmoid(r / (tau * T))), on cross-entropy and on the C&W margin (kappa 50)",
            temperature_factors=SURROGATE_TEMPERATURES,
            losses=list(adaptive.SURROGATE_LOSSES),
            **_adaptive_pgd(eps),
        ),
        "mask_surrogate_apgd": dict(
            attack="AutoAttack's APGD-CE and APGD-DLR (reference code, 100 iterations, 1 restart) through a softened "
            "FSR mask (BPDA, as mask_surrogate)",
            temperature_factors=SURROGATE_TEMPERATURES,
            attacks=["apgd-ce", "apgd-dlr"],
            code="pyautoattack",
            worst_case_with="pgd20",
        ),
        "feature_space": dict(
            attack="PGD towards the feature (f~ after the last FSR) of the nearest other-class image of the "
            "batch, then PGD-20 on cross-entropy from there",
            feature_steps=20,
            **_adaptive_pgd(eps),
        ),
        "transfer_twin": dict(
            attack="PGD-20 crafted on the twin (the same network without FSR, or with it)", **_adaptive_pgd(eps)
        ),
        "transfer_without_rec": dict(
            attack="PGD-20 crafted on the model's own w/o Rec ablation (FSR passes on f+ only)", **_adaptive_pgd(eps)
        ),
        "defense_masks": dict(
            attack="PGD-20 against CAS's or CIFS's masks: on their joint loss (beta 2), with every mask fixed to the "
            "true class's, with every mask fixed to the likeliest wrong class's (towards it), on the auxiliary heads "
            "first (moving the masks) then cross-entropy, and for CIFS through its relevance map",
            **_adaptive_pgd(eps),
        ),
    }[name] | {"eps": eps, "norm": "Linf"}


def _adaptive_pgd(eps: float) -> dict:
    # the paper's PGD-20 steps; the per-image worst case includes the report's own PGD-20
    return dict(steps=20, step_size=eps / 10, random_start=False, worst_case_with="pgd20")


def run_attack(name, model, x, y, eps, strong, source=None, twin=None, done=None, ablation=None):
    """Adversarial examples of one attack on one batch (x itself for 'natural'), plus extra per-image info; every
    argument comes from `attack_settings`. `twin` is the network the transfer_twin attack is crafted on; `done`
    holds this batch's adversarial examples by attack (the adaptive attacks reuse and add PGD-20 there); `ablation`,
    the model's w/o Rec copy for transfer_without_rec, is made here when not given."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose from {ATTACKS}")
    s = attack_settings(name, eps, strong)
    if name in ADAPTIVE:
        done = {} if done is None else done
        return _run_adaptive(name, s, model, x, y, eps, strong, twin, done, ablation)
    if name == "natural":
        return x, {}
    if name == "fgsm":
        return attacks.pgd(model, x, y, eps, s["step_size"], 1, random_start=False), {}
    if s["attack"] == "PGD":
        loss = attacks.cw_margin_loss(s["kappa"]) if "kappa" in s else None
        return attacks.pgd_restarts(
            model, x, y, eps, s["step_size"], s["steps"], s["restarts"], s["random_start"], loss
        ), {}
    if name in AUTOATTACKS:
        log = []
        x_adv = attacks.autoattack(model, x, y, eps, s["version"], len(x), attacks_to_run=s.get("attacks"), log=log)
        return x_adv, {"log": log}
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


def _run_adaptive(name, s, model, x, y, eps, strong, twin, done, ablation) -> tuple[torch.Tensor, dict]:
    """The per-image worst case of the attack's candidates and PGD-20, and (as extra) each candidate's correctness."""
    if "pgd20" not in done:
        done["pgd20"] = run_attack("pgd20", model, x, y, eps, strong)[0]
    pgd_args = (eps, s.get("step_size"), s.get("steps"))
    if name == "mask_surrogate":
        candidates = adaptive.mask_surrogate(model, x, y, *pgd_args, s["temperature_factors"], s["losses"])
    elif name == "mask_surrogate_apgd":
        candidates = adaptive.mask_surrogate_apgd(model, x, y, eps, s["temperature_factors"], s["attacks"])
    elif name == "feature_space":
        candidates = adaptive.feature_attack(model, x, y, eps, s["step_size"], s["feature_steps"], s["steps"])
    elif name == "transfer_twin":
        if twin is None:
            raise ValueError("transfer_twin is crafted on the model's twin (with or without FSR): give --twin")
        candidates = adaptive.transfer(twin, x, y, *pgd_args)
    elif name == "defense_masks":
        candidates = adaptive.defense_mask_attacks(model, x, y, *pgd_args)
    else:
        candidates = adaptive.transfer(ablation or adaptive.without_recalibration(model), x, y, *pgd_args)
    x_adv = adaptive.worst_case(model, x, y, [done["pgd20"], *candidates.values()])
    return x_adv, {"candidates": {label: correct(model, c, y).cpu() for label, c in candidates.items()}}


@torch.no_grad()
def correct(model, x, y) -> torch.Tensor:
    return model(x).argmax(1) == y


def batched(fn, x, y, batch_size):
    """fn(x, y) over batches of x and y, concatenated (keeps memory bounded for 10,000 images)."""
    return torch.cat([fn(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate_attacks(
    model, x, y, names, eps=PAPER_EPS, strong=False, source=None, batch_size=200, progress=True, twin=None
) -> dict:
    """Per-image correctness under each attack, accuracies, Ensemble (and, with adaptive attacks, the adaptive
    ensemble over every attack that ran), and what each attack ran with."""
    model.eval()
    for other in (source, twin):
        if other is not None:
            other.eval()
    # one w/o Rec copy of the model for every batch of transfer_without_rec
    ablation = adaptive.without_recalibration(model) if "transfer_without_rec" in names else None
    flags = {n: torch.zeros(len(x), dtype=torch.bool) for n in names}
    queries, autoattack_warnings = [], {n: [] for n in names if n in AUTOATTACKS}
    candidate_flags = {}  # adaptive attack -> candidate -> per-image correctness, batch by batch
    seconds = {n: 0.0 for n in names}
    batches = range(0, len(x), batch_size)
    # no estimate of the time left: attacks differ in cost by a thousandfold (AutoAttack against FGSM)
    bar_format = "{desc}: {n_fmt}/{total_fmt} attacks done [{elapsed}]"
    bar = tqdm(total=len(batches) * len(names), bar_format=bar_format, disable=not progress)
    for i, start in enumerate(batches):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        done = {}  # this batch's adversarial examples by attack
        clean_b = correct(model, xb, yb)
        for n in names:
            bar.set_description(f"{n}, batch {i + 1}/{len(batches)} of {len(xb)} images")
            t = time.perf_counter()
            if n in done:  # PGD-20, already run for an adaptive attack of this batch
                x_adv, extra = done[n], {}
            else:
                x_adv, extra = run_attack(n, model, xb, yb, eps, strong, source, twin, done, ablation)
                done[n] = x_adv
            attacks.check_bounds(x_adv, xb, eps)
            # robust: right under the attack and on the clean image, as AutoAttack counts it (a network may get an
            # attacked image right by chance where it gets the clean one wrong)
            flags[n][start : start + len(xb)] = (correct(model, x_adv, yb) & clean_b).cpu()
            queries += extra.get("queries", torch.empty(0)).tolist()
            for label, flag in extra.get("candidates", {}).items():
                candidate_flags.setdefault(n, {}).setdefault(label, []).append(flag & clean_b.cpu())
            for level, message in extra.get("log", []):
                if level == "WARNING" and message not in autoattack_warnings[n]:
                    autoattack_warnings[n].append(message)
            seconds[n] += time.perf_counter() - t
            bar.update()
    bar.close()
    accuracy = {n: flags[n].float().mean().item() for n in names}
    white = [n for n in WHITE_BOX if n in names]
    if len(white) > 1:
        accuracy["ensemble"] = torch.stack([flags[n] for n in white]).all(0).float().mean().item()
    if set(ADAPTIVE) & set(names):
        accuracy["adaptive_ensemble"] = torch.stack(list(flags.values())).all(0).float().mean().item()
    settings = {n: attack_settings(n, eps, strong) for n in names}
    if "adaptive_ensemble" in accuracy:
        settings["adaptive_ensemble"] = {"over": list(names)}
    if queries:  # over the images NAttack broke (those it could not break spent the whole budget)
        broke = [q for q, ok in zip(queries, flags["nattack"].tolist()) if not ok]
        settings["nattack"]["mean_queries_of_successes"] = sum(broke) / len(broke) if broke else None
    found = {}  # images each attack fools that PGD-20 leaves standing: what it finds beyond PGD-20
    if "pgd20" in names:
        found = {n: int((flags["pgd20"] & ~flags[n]).sum()) for n in names if n not in ("natural", "pgd20")}
    return {
        "accuracy": accuracy,
        "settings": settings,
        "seconds": seconds,
        "flags": flags,
        "candidates": {
            n: {label: torch.cat(f).float().mean().item() for label, f in by_label.items()}
            for n, by_label in candidate_flags.items()
        },
        "found_beyond_pgd20": found,
        "strong": strong,
        "ensemble_over": white if "ensemble" in accuracy else [],
        "autoattack_warnings": autoattack_warnings,
    }


def robustness_curve(model, x, y, batch_size=200, natural=None, progress=False) -> dict:
    """Accuracy against eps, PGD-20 with step eps/4 and no random start at eps CURVE_EPS / 255: the data of the
    robustness plot and of the sanity checks on it. `natural`, the clean accuracy when already known, is eps 0."""

    clean = batched(lambda xb, yb: correct(model, xb, yb), x, y, batch_size)

    def accuracy_at(e):
        if e == 0:
            return natural if natural is not None else clean.float().mean().item()
        pgd20 = lambda xb, yb: attacks.pgd(model, xb, yb, e / 255, e / 255 / 4, 20, random_start=False)  # noqa: E731
        robust = batched(lambda xb, yb: correct(model, pgd20(xb, yb), yb), x, y, batch_size)
        return (robust & clean).float().mean().item()  # robust only where the clean image is right too

    start = time.perf_counter()
    accuracy = [accuracy_at(e) for e in tqdm(CURVE_EPS, desc="robustness curve", disable=not progress)]
    return {
        "attack": CURVE_ATTACK,
        "images": len(x),
        "eps": [e / 255 for e in CURVE_EPS],
        "accuracy": accuracy,
        "seconds": time.perf_counter() - start,
    }
