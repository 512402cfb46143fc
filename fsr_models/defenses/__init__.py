"""The feature-level defenses that FSR's Table 4 compares with, as modules that sit inside a network: CAS (Bai et al.,
ICLR 2021), CIFS (Yan et al., ICML 2021) and Feature Denoising (Xie et al., CVPR 2019). Written from the papers'
equations and checked against the authors' code (tests/test_defenses.py). `cas.py`, `cifs.py` and `fd.py` import torch
and the standard library only: a Hub repository carries them unchanged for `trust_remote_code=True`.

CAS and CIFS re-weight a feature's channels with an auxiliary classifier, whose logits the training loss needs: a
network returns them, with its logits, as a `DefenseOutput` when asked (`return_defense=True`), as FSR's networks
return FSR's parts (`return_fsr=True`).
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from fsr_models.defenses.cas import CAS
from fsr_models.defenses.cifs import CIFS
from fsr_models.defenses.fd import DenoisingBlock, non_local_means

# The weight of the auxiliary heads' cross-entropy in both papers' code (CAS: --beta 2; CIFS: beta_cls 2)
AUX_BETA = 2.0


class DefenseOutput(NamedTuple):
    """A network's logits together with the auxiliary logits of each of its CAS or CIFS modules, in network order
    (none for Feature Denoising)."""

    logits: torch.Tensor
    aux_logits: tuple[torch.Tensor, ...]


def aux_defense(model: torch.nn.Module) -> str | None:
    """The defense with auxiliary heads and a loss of its own that `model` holds: "cas" or "cifs"; None when it holds
    neither CAS nor CIFS modules."""
    kinds = {type(m) for m in model.modules()} & {CAS, CIFS}
    return kinds.pop().__name__.lower() if kinds else None


def defense_loss(
    defense: str, out: DefenseOutput, y: torch.Tensor, beta: float = AUX_BETA, reduction: str = "mean"
) -> torch.Tensor:
    """The loss CAS's or CIFS's authors train with, and their training attack maximises (both on the same heads, in
    eval mode for the attack):

        CAS  (bymavis/CAS_ICLR2021, train.py):   CE(logits, y) + beta * mean_i CE(aux_i, y)
        CIFS (HanshuYAN/CIFS, CIFAR10_Res18_CIFS.py):   3 / (beta + 1) * [CE(logits, y) + beta * mean_i CE(aux_i, y)]

    equal at the papers' beta 2. `reduction` "sum" sums each CE over the batch (for an attack's gradient)."""
    if defense not in ("cas", "cifs"):
        raise ValueError(f"defense_loss is CAS's or CIFS's ('cas', 'cifs'), got {defense!r}")
    if not out.aux_logits:
        raise ValueError("defense_loss needs the auxiliary logits: call the network with return_defense=True")
    aux = torch.stack([F.cross_entropy(a, y, reduction=reduction) for a in out.aux_logits]).mean()
    loss = F.cross_entropy(out.logits, y, reduction=reduction) + beta * aux
    return loss * 3 / (beta + 1) if defense == "cifs" else loss


__all__ = [
    "AUX_BETA",
    "CAS",
    "CIFS",
    "DefenseOutput",
    "DenoisingBlock",
    "aux_defense",
    "defense_loss",
    "non_local_means",
]
