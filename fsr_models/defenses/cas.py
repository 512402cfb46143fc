"""Channel-wise Activation Suppressing (CAS), Bai et al., "Improving Adversarial Robustness via Channel-wise
Activation Suppressing", ICLR 2021, Sec. 4.

Adversarial examples activate a feature's channels more uniformly than natural ones; CAS learns which channels each
class relies on (the weights of an auxiliary linear classifier on the pooled feature) and scales the channels by the
weights of one class, suppressing the rest.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn


class CAS(nn.Module):
    """CAS on a C-channel feature f (N x C x H x W), for K classes:

        p  = W GAP(f) + b                  the auxiliary logits, trained with CE against the label
        k  = y (the label) in training, argmax p otherwise
        f' = f * W[k]                      each sample's channels scaled by the weight row of its class

    The mask is the raw weight row (no squashing: entries may be negative), as in the authors' code. The choice of k
    passes no gradient; W gets gradients through p and through the mask.

    `forward(f, targets)`: the labels choose the masks in training mode only; without them, or in eval mode, the
    auxiliary prediction does (the authors' attacks and evaluation run in eval mode, where labels are ignored).
    `return_aux=True` (eager mode) also returns p.
    """

    def __init__(self, channels: int, num_classes: int, device=None, dtype=None):
        super().__init__()
        self.fc = nn.Linear(channels, num_classes, device=device, dtype=dtype)

    def forward(self, f: torch.Tensor, targets: Optional[torch.Tensor] = None, return_aux: bool = False):
        aux_logits = self.fc(f.mean(dim=(2, 3)))
        if self.training and targets is not None:
            classes = targets
        else:
            classes = aux_logits.argmax(dim=1)
        out = f * self.fc.weight[classes][:, :, None, None]
        if return_aux and not torch.jit.is_scripting():  # the auxiliary logits are for training, in eager mode
            return out, aux_logits
        return out
