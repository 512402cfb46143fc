"""L-infinity PGD on models that map [0, 1] pixels to logits, as used by adversarial training and evaluation.

Input gradients are taken with `torch.autograd.grad`, so no gradient reaches the parameters' `.grad` and the model
may be the unwrapped module of a DDP model. Callers choose the mode: training attacks run in `eval()` mode (BN
running statistics, deterministic FSR mask), as the authors do.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    random_start: bool = True,
    loss_fn: LossFn | None = None,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Maximise `loss_fn(logits, y)` (summed cross-entropy by default) within the eps-ball around x and [0, 1].

    `start` overrides the starting point (TRADES starts from x + 0.001 N(0, 1)); else `random_start` draws
    U(-eps, eps). Returns a detached tensor with |x_adv - x| <= eps and 0 <= x_adv <= 1.
    """
    loss_fn = loss_fn or (lambda logits, target: F.cross_entropy(logits, target, reduction="sum"))
    x = x.detach()
    if start is not None:
        x_adv = start.detach()
    elif random_start:
        x_adv = x + torch.empty_like(x).uniform_(-eps, eps)
    else:
        x_adv = x.clone()
    x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = loss_fn(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()
