"""Feature Separation and Recalibration (FSR), Kim et al., CVPR 2023, Sec. 3.

`FSR` is the module that sits inside a network: Separation Net S, the Gumbel-softmax mask and Recalibration Net R.
It is defined in `fsr_core`, the torch-only module that the zoo's Hub repositories carry too, and imported here.
`FSRLoss` holds the shared auxiliary head h and computes the separation and recalibration losses (Eq. 3-5) from
the parts that `FSR` returns when asked. h lives with the loss, not in the network, because only the losses use it:
a network whose plain forward left h without a gradient would break DDP without `find_unused_parameters`, and
inference never needs it.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from fsr_models.fsr.fsr_core import FSR, FSRParts


class FSROutput(NamedTuple):
    """A network's logits together with the parts of each of its FSR modules, in network order."""

    logits: torch.Tensor
    fsr_parts: tuple[FSRParts, ...]


def highest_wrong_class(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """y' of Eq. 3: the highest-scoring class other than the true one (top-1 if wrong, else top-2)."""
    return logits.detach().scatter(1, target[:, None], float("-inf")).argmax(dim=1)


class FSRLoss(nn.Module):
    """The FSR terms of Eq. 5 with the auxiliary heads h (global average pool -> Linear(C, classes)).

    One head per FSR position, shared by f+, f- and f~- of that position as in the paper. Returns
    lambda_sep * L_sep + lambda_rec * L_rec averaged over positions, each CE a batch mean; add it to the
    classification loss (AT, TRADES or MART) computed on the same batch.
    """

    def __init__(
        self,
        channels: Sequence[int],
        num_classes: int,
        lambda_sep: float = 1.0,
        lambda_rec: float = 1.0,
    ):
        super().__init__()
        if not channels:
            raise ValueError("FSRLoss needs at least one FSR position: this network has none")
        self.heads = nn.ModuleList(nn.Linear(c, num_classes) for c in channels)
        self.lambda_sep = lambda_sep
        self.lambda_rec = lambda_rec

    @classmethod
    def for_model(cls, model: nn.Module, lambda_sep: float = 1.0, lambda_rec: float = 1.0) -> "FSRLoss":
        """Heads sized for `model`'s FSR modules and classifier (build it after any `reset_classifier`), initialised
        as the authors' code for that backbone initialises its auxiliary head (the network's `weight_init`)."""
        channels = [m.channels for m in model.modules() if isinstance(m, FSR)]
        loss = cls(channels, model.num_classes, lambda_sep, lambda_rec)
        if hasattr(model, "weight_init"):
            model.weight_init(loss.heads.modules())
        return loss

    def head_logits(self, position: int, feature: torch.Tensor) -> torch.Tensor:
        return self.heads[position](feature.mean(dim=(2, 3)))

    def forward(self, output: FSROutput, target: torch.Tensor) -> torch.Tensor:
        return self.terms(output, target)["fsr"]

    def terms(self, output: FSROutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'sep': L_sep, 'rec': L_rec, 'fsr': weighted sum}, each averaged over FSR positions."""
        if len(output.fsr_parts) != len(self.heads):
            raise ValueError(
                f"FSRLoss has {len(self.heads)} heads but the network returned {len(output.fsr_parts)} FSR parts"
            )
        wrong = highest_wrong_class(output.logits, target)
        zero = output.logits.new_zeros(())
        sep, rec = zero, zero
        for i, parts in enumerate(output.fsr_parts):
            if parts.f_pos is not None:  # Eq. 3, only where there is a Separation stage
                sep = sep + F.cross_entropy(self.head_logits(i, parts.f_pos), target)
                sep = sep + F.cross_entropy(self.head_logits(i, parts.f_neg), wrong)
            if parts.f_neg_recal is not None:  # Eq. 4
                rec = rec + F.cross_entropy(self.head_logits(i, parts.f_neg_recal), target)
        n = len(output.fsr_parts)
        sep, rec = sep / n, rec / n
        return {"sep": sep, "rec": rec, "fsr": self.lambda_sep * sep + self.lambda_rec * rec}
