"""The feature-level defenses that FSR's Table 4 compares with, as modules that sit inside a network: CAS (Bai et al.,
ICLR 2021), CIFS (Yan et al., ICML 2021) and Feature Denoising (Xie et al., CVPR 2019). Written from the papers'
equations and checked against the authors' code (tests/test_defenses.py); torch only.

CAS and CIFS re-weight a feature's channels with an auxiliary classifier, whose logits the training loss needs: a
network returns them, with its logits, as a `DefenseOutput` when asked (`return_defense=True`), as FSR's networks
return FSR's parts (`return_fsr=True`).
"""

from typing import NamedTuple

import torch

from fsr_models.defenses.cas import CAS
from fsr_models.defenses.cifs import CIFS
from fsr_models.defenses.fd import DenoisingBlock, non_local_means


class DefenseOutput(NamedTuple):
    """A network's logits together with the auxiliary logits of each of its CAS or CIFS modules, in network order
    (none for Feature Denoising)."""

    logits: torch.Tensor
    aux_logits: tuple[torch.Tensor, ...]


__all__ = ["CAS", "CIFS", "DefenseOutput", "DenoisingBlock", "non_local_means"]
