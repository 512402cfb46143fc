"""Channel-wise Importance-based Feature Selection (CIFS), Yan et al., "CIFS: Improving Adversarial Robustness of CNNs
via Channel-wise Importance-based Feature Selection", ICML 2021, Sec. 4.

A channel matters for a prediction in proportion to the gradient of the top class logits with respect to it; CIFS
keeps the channels that matter most (a softmax over the channels of that gradient) and suppresses the others, which
adversarial examples otherwise use.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# The authors' nonlinear probe: Linear(C, 128) -> Softplus(beta=5) -> Linear(128, K).
PROBE_HIDDEN = 128
SOFTPLUS_BETA = 5.0


class CIFS(nn.Module):
    """CIFS on a C-channel feature f (N x C x H x W), with a probe A on g = GAP(f) that predicts K classes:

        p = A(g)                                        the probe's logits, trained with CE against the label
        s = p[y] + p[t2] in training, p[t1] + p[t2] otherwise     t1, t2: the probe's two highest classes
        m = softmax over the channels of ds/dg          (= the spatial sum of ds/df, the authors' relevance map)
        f' = f * m

    The relevance is taken with f held constant (the authors differentiate a detached copy of f), so the mask passes
    gradients to the probe's parameters but not to f or the input. A reads f only through g, so ds/dg is written
    out rather than computed by autograd: the same values, and it runs under `torch.no_grad()`, TorchScript and FX.

    Probes: linear, p = W2 g + b2 (ds/dg = W2[t1] + W2[t2]); nonlinear (`hidden` units), p = W2 softplus_5(W1 g + b1)
    + b2 (ds/dg = ((W2[t1] + W2[t2]) * sigmoid(5 (W1 g + b1))) W1).

    `forward(f, targets)`: the labels replace the top class in training mode only; without them, or in eval mode,
    the probe's prediction does (the authors' attacks and evaluation run in eval mode). `return_aux=True` (eager
    mode) also returns p.

    `relevance_gradient = True` differentiates the mask's dependence on f too (through the nonlinear probe's
    softplus; the same values): the gradient an adaptive attack takes, which the authors' detach hides.
    """

    def __init__(self, channels: int, num_classes: int, hidden: Optional[int] = None, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.hidden = nn.Linear(channels, hidden, **dd) if hidden else None
        self.fc = nn.Linear(hidden or channels, num_classes, **dd)
        self.softplus_beta = SOFTPLUS_BETA
        self.relevance_gradient = False

    def _hidden(self, g: torch.Tensor) -> torch.Tensor:
        """The nonlinear probe's pre-activation W1 g + b1 (the linear probe has none: g itself)."""
        return g if self.hidden is None else self.hidden(g)

    def forward(self, f: torch.Tensor, targets: Optional[torch.Tensor] = None, return_aux: bool = False):
        g = f.mean(dim=(2, 3))
        h = self._hidden(g)
        probe_logits = self.fc(h if self.hidden is None else F.softplus(h, beta=self.softplus_beta))
        top2 = probe_logits.topk(2, dim=1).indices
        first = targets if self.training and targets is not None else top2[:, 0]
        relevance = self.fc.weight[first] + self.fc.weight[top2[:, 1]]  # ds/d(the probe's last input)
        if self.hidden is not None:  # through softplus and W1, at the feature held constant (unless asked)
            h_mask = h if self.relevance_gradient else self.hidden(g.detach())
            relevance = (relevance * torch.sigmoid(self.softplus_beta * h_mask)) @ self.hidden.weight
        out = f * F.softmax(relevance, dim=1)[:, :, None, None]
        if return_aux and not torch.jit.is_scripting():  # the probe's logits are for training, in eager mode
            return out, probe_logits
        return out
