"""Adaptive attacks designed against FSR (Tramer et al., NeurIPS 2020: attack the defense, not a generic model).

FSR's mask is m = sigmoid(S(f) / tau) with tau = 0.1 at test time: where it saturates, its gradient vanishes, which
can fool gradient-based attacks without making the network robust. Each attack here targets one way FSR could
mislead PGD, and keeps, per image, the worst case over its own candidates and the protocol's PGD-20 (`worst_case`),
so it never reports higher accuracy than that PGD-20. Each returns its candidates by name, so that a report can say
what each one finds:

- `mask_surrogate`: PGD whose gradients go through a softened mask (BPDA, Athalye et al., ICML 2018): the forward
  is the network's own, the backward that of sigmoid(S(f) / (tau * T)), for temperature factors T from near the
  test-time tau to far above it, on cross-entropy and on the C&W margin (Tramer et al.: a loss that does not
  saturate); `mask_surrogate_apgd`: AutoAttack's APGD-CE and APGD-DLR (step-size schedule, momentum) through the
  same softened mask.
- `feature_attack`: move the feature FSR passes on (`forward_features`, f~ after the last FSR module) towards that of
  an image of another class, then PGD on the logits from there.
- transfer attacks: PGD crafted on another network, the plain twin (the zoo's counterpart without FSR) or the
  model's own "w/o Rec" ablation (`without_recalibration`, FSR passing on f+ only), evaluated on the model.

Against the masks of CAS and CIFS (FSR's Table 4 baselines), which follow the network's own auxiliary prediction at
test time (a discrete choice that passes no gradient) and, for CIFS, are differentiated with the feature held
constant: `defense_mask_attacks`, PGD on their joint loss, with the masks fixed to the true class's or (towards it) to
the likeliest wrong class's, after moving the auxiliary predictions, and (CIFS) through the relevance map.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from typing import Iterator, Sequence

import torch

from fsr_models.defenses import AUX_BETA, CAS, CIFS, aux_defense, defense_loss
from fsr_models.evaluation.attacks import autoattack, cross_entropy_sum, cw_margin, cw_margin_loss, pgd, project
from fsr_models.fsr.fsr_core import FSR

# The losses PGD through the softened mask maximises: cross-entropy, and the paper's C&W margin (kappa 50)
SURROGATE_LOSSES = {"cross-entropy": cross_entropy_sum, "C&W margin": cw_margin_loss(kappa=50.0)}


@torch.no_grad()
def worst_case(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, candidates: Sequence[torch.Tensor]):
    """Per image, the candidate with the lowest margin of the true class on `model` (z_y - max_{i != y} z_i: below 0
    is a fooled image), so an image fooled by any candidate stays fooled."""
    margins = torch.stack([-cw_margin(model(c), y, kappa=float("inf")) for c in candidates])  # (candidates, batch)
    best = margins.argmin(0)
    return torch.stack(list(candidates))[best, torch.arange(len(x), device=x.device)]


class _SoftenedGradient(torch.autograd.Function):
    """sigmoid(r / tau) in the forward, exactly; in the backward, the derivative of sigmoid(r / temperature)."""

    @staticmethod
    def forward(ctx, r: torch.Tensor, tau: float, temperature: float) -> torch.Tensor:
        ctx.save_for_backward(r)
        ctx.temperature = temperature
        return torch.sigmoid(r / tau)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (r,) = ctx.saved_tensors
        soft = torch.sigmoid(r / ctx.temperature)
        return grad * soft * (1 - soft) / ctx.temperature, None, None


@contextlib.contextmanager
def surrogate_mask(model: torch.nn.Module, temperature_factor: float) -> Iterator[None]:
    """Within the block, every FSR mask of `model` keeps its value (eval mode: the same logits, bit for bit) but
    takes the gradient of sigmoid(r / (tau * temperature_factor)): BPDA with a softened mask."""
    fsr_modules = [m for m in model.modules() if isinstance(m, FSR)]
    if not fsr_modules:
        raise ValueError("the mask surrogate attacks FSR's mask: this network has no FSR module")
    if model.training:
        raise ValueError("the mask surrogate replaces the eval-mode mask: call model.eval() first")

    def soft_mask(module: FSR, r: torch.Tensor) -> torch.Tensor:
        return _SoftenedGradient.apply(r, module.tau, module.tau * temperature_factor)

    for m in fsr_modules:
        m.mask = soft_mask.__get__(m)  # an instance attribute: FSR.forward's self.mask finds it first
    try:
        yield
    finally:
        for m in fsr_modules:
            del m.mask


def mask_surrogate(
    model, x, y, eps, step_size, steps, temperature_factors: Sequence[float], losses: Sequence[str]
) -> dict[str, torch.Tensor]:
    """PGD (no random start) through a softened mask, once per temperature factor and loss (`SURROGATE_LOSSES`)."""
    candidates = {}
    for factor in temperature_factors:
        with surrogate_mask(model, factor):
            for loss in losses:
                loss_fn = SURROGATE_LOSSES[loss]
                candidates[f"T={factor:g}, {loss}"] = pgd(
                    model, x, y, eps, step_size, steps, random_start=False, loss_fn=loss_fn
                )
    return candidates


def mask_surrogate_apgd(
    model, x, y, eps, temperature_factors: Sequence[float], apgd_attacks: Sequence[str]
) -> dict[str, torch.Tensor]:
    """AutoAttack's APGD attacks (reference code, e.g. "apgd-ce", "apgd-dlr"; 100 iterations, 1 restart) through a
    softened mask, once per temperature factor and attack."""
    candidates = {}
    for factor in temperature_factors:
        with surrogate_mask(model, factor):
            for attack in apgd_attacks:
                candidates[f"T={factor:g}, {attack}"] = autoattack(
                    model, x, y, eps, "custom", len(x), attacks_to_run=[attack]
                )
    return candidates


def feature_attack(model, x, y, eps, step_size, feature_steps, steps) -> dict[str, torch.Tensor]:
    """Per image, the target is the clean image of another class (of the batch) whose feature is nearest; PGD
    (sign steps) minimises the squared distance of `forward_features` to the target's, then PGD on cross-entropy
    continues from there. Returns both points, for `worst_case`; a batch of one class has no target (x is returned)."""
    x = x.detach()
    with torch.no_grad():
        features = model.forward_features(x).flatten(1)
        distance = torch.cdist(features, features).masked_fill(y[:, None] == y[None, :], float("inf"))
        target_index = distance.argmin(1)
        has_target = distance.min(1).values.isfinite()
        target = features[target_index]
    x_adv = x.clone()
    for _ in range(feature_steps):
        x_adv.requires_grad_(True)
        loss = (model.forward_features(x_adv).flatten(1) - target).pow(2).sum(1)
        (grad,) = torch.autograd.grad(loss[has_target].sum(), x_adv)
        x_adv = project(x_adv.detach() - step_size * grad.sign(), x, eps)
    return {
        "feature": x_adv,
        "feature, then PGD on cross-entropy": pgd(model, x, y, eps, step_size, steps, random_start=False, start=x_adv),
    }


def without_recalibration(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` as the paper's "w/o Rec" ablation on the same weights: every FSR module passes on f+ only."""
    ablation = copy.deepcopy(model).eval()
    fsr_modules = [m for m in ablation.modules() if isinstance(m, FSR)]
    if not fsr_modules or any(m.separation_net is None for m in fsr_modules):
        raise ValueError("the w/o Rec ablation needs FSR modules with a Separation stage")
    for m in fsr_modules:
        m.output = "f_pos"
    return ablation


def transfer(source, x, y, eps, step_size, steps) -> dict[str, torch.Tensor]:
    """PGD (no random start) crafted on `source`, for `worst_case` on the target model."""
    return {"PGD on the source": pgd(source, x, y, eps, step_size, steps, random_start=False)}


@contextlib.contextmanager
def defense_masks(model: torch.nn.Module, labels: bool = False, relevance_gradient: bool = False) -> Iterator[None]:
    """Within the block, the CAS and CIFS modules of `model` (in eval mode otherwise: BN's running statistics) take
    their masks from the labels passed as `targets` (`labels`: as in training; they have no other mode-dependent
    part), and CIFS differentiates its mask with respect to the feature (`relevance_gradient`)."""
    modules = [m for m in model.modules() if isinstance(m, (CAS, CIFS))]
    if not modules:
        raise ValueError("the mask attacks are for CAS and CIFS: this network has neither")
    if any(m.training for m in model.modules()):
        raise ValueError("the mask attacks attack the eval-mode network: call model.eval() first")
    gradients = {m: m.relevance_gradient for m in modules if isinstance(m, CIFS)}
    try:
        for m in modules:
            m.train(labels)
            if isinstance(m, CIFS):
                m.relevance_gradient = relevance_gradient
        yield
    finally:
        for m in modules:
            m.eval()
        for m, before in gradients.items():
            m.relevance_gradient = before


def aux_cross_entropy(out, y: torch.Tensor) -> torch.Tensor:
    """The auxiliary heads' summed cross-entropy, averaged over the heads: what moves their predictions, and so the
    masks they choose."""
    return torch.stack([cross_entropy_sum(a, y) for a in out.aux_logits]).mean()


def defense_mask_attacks(model, x, y, eps, step_size, steps) -> dict[str, torch.Tensor]:
    """PGD (no random start) against CAS's or CIFS's masks, each for `worst_case`:

    - on their joint loss (CE + beta * mean CE of the heads, beta 2), as their authors evaluate;
    - with every mask fixed to the true class's (as in training), on cross-entropy: the gradient no longer ignores
      which mask is applied, and the true class's mask is the one the clean image mostly gets;
    - with every mask fixed to the likeliest wrong class's (by the clean logits), towards that class on the joint
      loss: an image the logits and the heads both give to that class gets its mask at test time too;
    - first on the heads' cross-entropy alone (their predictions, and so the masks, move away from the true class),
      then on cross-entropy from there;
    - for CIFS, on cross-entropy through its relevance map (`relevance_gradient`)."""
    defense = aux_defense(model)
    joint = functools.partial(model, return_defense=True)
    joint_loss = lambda out, t: defense_loss(defense, out, t, AUX_BETA, "sum")  # noqa: E731
    candidates = {"joint loss": pgd(joint, x, y, eps, step_size, steps, False, joint_loss)}
    with torch.no_grad():
        wrong = model(x).scatter(1, y[:, None], float("-inf")).argmax(dim=1)
    with defense_masks(model, labels=True):
        candidates["masks of the true class"] = pgd(
            functools.partial(model, targets=y), x, y, eps, step_size, steps, False
        )
        towards_wrong = functools.partial(model, targets=wrong, return_defense=True)
        candidates["masks of the likeliest wrong class"] = pgd(
            towards_wrong, x, wrong, eps, step_size, steps, False, lambda out, t: -joint_loss(out, t)
        )
    heads_first = pgd(joint, x, y, eps, step_size, steps, random_start=False, loss_fn=aux_cross_entropy)
    candidates["heads first, then cross-entropy"] = pgd(model, x, y, eps, step_size, steps, False, start=heads_first)
    if defense == "cifs":
        with defense_masks(model, relevance_gradient=True):
            candidates["through the relevance map"] = pgd(model, x, y, eps, step_size, steps, random_start=False)
    return candidates
