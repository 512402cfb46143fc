"""Classification losses of adversarial training: AT (Madry et al.), TRADES (Zhang et al.) and MART (Wang et al.),
written as their authors' code computes them. The FSR terms (`fsr_models.FSRLoss`) are added to any of them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsr_models.fsr import highest_wrong_class

METHODS = ("natural", "at", "trades", "mart")


def trades_kl(logits_adv: torch.Tensor, logits_nat: torch.Tensor) -> torch.Tensor:
    """Summed KL(p_nat || p_adv): what the TRADES attack maximises (divide by the batch for the loss)."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_nat, dim=1), reduction="sum")


def trades_loss(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """CE(f(x), y) + beta * KL(f(x) || f(x')) / batch."""
    return F.cross_entropy(logits_nat, y) + beta * trades_kl(logits_adv, logits_nat) / len(y)


def mart_loss(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """BCE on the adversarial example plus beta * KL weighted by (1 - p_nat(y)), with the MART code's constants."""
    p_adv = F.softmax(logits_adv, dim=1)
    wrong = highest_wrong_class(logits_adv, y)
    bce = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), wrong)
    p_nat = F.softmax(logits_nat, dim=1)
    p_true = p_nat.gather(1, y[:, None]).squeeze(1)
    kl = F.kl_div(torch.log(p_adv + 1e-12), p_nat, reduction="none").sum(dim=1)
    return bce + beta * (kl * (1.0000001 - p_true)).mean()


def classification_loss(
    method: str, logits_adv: torch.Tensor, y: torch.Tensor, logits_nat: torch.Tensor | None = None, beta: float = 6.0
) -> torch.Tensor:
    """L_cls of Eq. 5 for `method`; `logits_adv` are the logits of the training input (clean for 'natural')."""
    if method in ("natural", "at"):
        return F.cross_entropy(logits_adv, y)
    if method == "trades":
        return trades_loss(logits_nat, logits_adv, y, beta)
    if method == "mart":
        return mart_loss(logits_nat, logits_adv, y, beta)
    raise ValueError(f"unknown training method {method!r}; choose one of {METHODS}")
