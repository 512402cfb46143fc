"""How alive each FSR module of a network is: the size of what its Recalibration Net adds, its live units and its
mask, and the problems they show (a dead R is FSR without Recalibration)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from fsr_models.fsr.fsr_core import FSR

# Below these, an FSR module has stopped working (see `fsr_health_problems`).
R_CONTRIBUTION_MIN = 1e-3  # |(1 - m) R(f-)| / |f-|: 0.02-0.99 in a fresh or working module, exactly 0 when R is dead
# The share of live units (hidden channels of S or R positive for some image after a ReLU) is reported, not judged
# beyond this: working Recalibration Nets of the zoo's runs kept 8-100% of the units after their second ReLU (11-42%
# in a full-width GPU run whose R contributed 0.5-0.99 of |f-|), the one dead R kept none. A stage with no live unit
# passes on a constant and gets no gradient: that is a problem.


@torch.no_grad()
def fsr_health(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> dict[str, dict[str, float]]:
    """How alive each FSR module of `model` is on the images `x`, in eval mode (the function users get).

    Per module (keyed by its name in the network, e.g. "fsr4"):
    - `r_contribution`: |(1 - m) R(f-)| / |f-| over all images, the size of what R adds to f- relative to f- (0: R
      does nothing; it may exceed 1);
    - `s_live_1`, `s_live_2`, `r_live_1`, `r_live_2`: the share of hidden channels after the first and second
      BN + ReLU of S and R that are positive somewhere in some image (a channel that never is, is dead: no
      gradient reaches it through its ReLU, so it stays dead);
    - `mask_mean`, `mask_above_0.99`, `mask_below_0.01`: the mask m and its saturated shares.
    Keys of a stage the module was built without are left out. The model's train/eval mode is restored.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, FSR)]
    modules = [m for m in model.modules() if isinstance(m, FSR)]
    if not modules:
        return {}
    live: dict[tuple[int, str], torch.Tensor] = {}  # (module, "s_live_1"...) -> per-channel "ever positive"

    def watch(i: int, key: str):
        def hook(_module, _inputs, out):
            positive = (out > 0).any(dim=(0, 2, 3))
            live[i, key] = positive | live[i, key] if (i, key) in live else positive

        return hook

    hooks = []
    for i, m in enumerate(modules):
        for prefix, net in (("s", m.separation_net), ("r", m.recalibration_net)):
            if net is not None:  # the ReLUs of `conv_stack`, after the first and second BN
                hooks += [
                    net[2].register_forward_hook(watch(i, f"{prefix}_live_1")),
                    net[5].register_forward_hook(watch(i, f"{prefix}_live_2")),
                ]
    sums = torch.zeros(len(modules), 5, dtype=torch.float64)  # |(1-m)R|^2, |f-|^2, sum m, m > 0.99, m < 0.01
    count = torch.zeros(len(modules), dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            for i, parts in enumerate(model(x[start : start + batch_size], return_fsr=True).fsr_parts):
                m, f_neg = parts.mask.double(), parts.f_neg.double()
                recal = (parts.f_neg_recal.double() - f_neg) if parts.f_neg_recal is not None else torch.zeros(())
                sums[i] += torch.stack(
                    [
                        recal.square().sum().cpu(),
                        f_neg.square().sum().cpu(),
                        m.sum().cpu(),
                        (m > 0.99).sum().cpu(),
                        (m < 0.01).sum().cpu(),
                    ]
                )
                count[i] += m.numel()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    report = {}
    for i, (name, m) in enumerate(zip(names, modules)):
        entry = {}
        if m.recalibration_net is not None:
            entry["r_contribution"] = math.sqrt(sums[i, 0] / sums[i, 1]) if sums[i, 1] > 0 else 0.0
        if m.separation_net is not None:
            entry |= {
                "mask_mean": sums[i, 2] / count[i],
                "mask_above_0.99": sums[i, 3] / count[i],
                "mask_below_0.01": sums[i, 4] / count[i],
            }
        entry |= {key: alive.float().mean().item() for (j, key), alive in sorted(live.items()) if j == i}
        report[name] = {k: float(v) for k, v in entry.items()}
    return report


def fsr_health_problems(health: dict[str, dict[str, float]]) -> list[str]:
    """What is broken in a `fsr_health` report, one sentence per problem (empty when every module is active)."""
    problems = []
    stage_names = {"s": "Separation Net", "r": "Recalibration Net"}
    for name, h in health.items():
        if "r_contribution" in h and h["r_contribution"] < R_CONTRIBUTION_MIN:
            problems.append(
                f"{name}: the Recalibration Net is dead: |(1 - m) R(f-)| / |f-| = {h['r_contribution']:.3g} (below "
                f"{R_CONTRIBUTION_MIN}), so f~- = f- and the recalibration loss trains nothing"
            )
        for key in ("s_live_1", "s_live_2", "r_live_1", "r_live_2"):
            if key in h and h[key] == 0:
                problems.append(
                    f"{name}: the {stage_names[key[0]]} has no live units after ReLU {key[-1]}: none of its channels "
                    "is ever active, so it passes on a constant and gets no gradient"
                )
        if "mask_mean" in h and (h["mask_above_0.99"] > 0.99 or h["mask_below_0.01"] > 0.99):
            problems.append(
                f"{name}: the Separation mask is constant (mean {h['mask_mean']:.3f}): it no longer separates"
            )
    return problems
