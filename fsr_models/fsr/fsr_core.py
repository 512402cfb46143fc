"""What the package's networks and the code of the zoo's Hub repositories share, written once: the FSR module of
Kim et al., CVPR 2023, Sec. 3 (Separation Net S, the Gumbel-softmax mask, Recalibration Net R), the paper's FSR
positions, VGG16's stages and the checks of a config.

The package imports it as `fsr_models.fsr.fsr_core`. A Hub repository carries this file unchanged beside its
`configuration_fsr.py` and `modeling_fsr.py`, which import it as `.fsr_core` (transformers' loader of
`trust_remote_code=True` fetches what remote code imports relatively). It therefore imports torch and the standard
library only, nothing of the package.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
import torch.nn as nn

# Which feature FSR passes on to the rest of the network (Table 5 of the paper replaces f~ by the others).
FSR_OUTPUTS = ("f_tilde", "f_pos", "f_neg", "f_neg_recal")
# The paper's FSR position in each backbone of the zoo: the stages (1-based) followed by an FSR module.
PAPER_FSR_STAGES = {"resnet18": (4,), "vgg16": (4,), "wrn34_10": (3,)}
# VGG16's conv stages: (width, convs), a 2x2 max-pool after each.
VGG16_STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def check_fsr_config(backbone: str | None, fsr_tau: float, fsr_output: str, other_backbones: str = "") -> None:
    """Refuse, when a config is made (so that a bad config.json fails on load), what no network of the zoo is: a
    backbone not of PAPER_FSR_STAGES, a temperature that is not positive, an output not in FSR_OUTPUTS. `backbone`
    None is one the caller has accepted itself (the package's timm CNNs); `other_backbones` names those, for the
    message."""
    if backbone is not None and backbone not in PAPER_FSR_STAGES:
        raise ValueError(
            f"FSRConfig.backbone must be one of {sorted(PAPER_FSR_STAGES)}{other_backbones}, got {backbone!r}"
        )
    if fsr_tau <= 0:
        raise ValueError(f"FSRConfig.fsr_tau must be positive, got {fsr_tau}")
    if fsr_output not in FSR_OUTPUTS:
        raise ValueError(f"FSRConfig.fsr_output must be one of {FSR_OUTPUTS}, got {fsr_output!r}")


class FSRParts(NamedTuple):
    """What one FSR module computed, for the losses and for feature analysis.

    `f_pos` is None without Separation (there is no robust part); `f_neg_recal` is None without Recalibration.
    """

    f_pos: torch.Tensor | None  # f+ = m+ * f
    f_neg: torch.Tensor  # f- = m- * f
    f_neg_recal: torch.Tensor | None  # f~- = f- + m- * R(f-)
    mask: torch.Tensor  # m+ = m, in [0, 1], the feature's shape


def conv_stack(channels: int, hidden: int) -> nn.Sequential:
    """The authors' S and R: three 3x3 convs (C -> hidden -> hidden -> C), BN + ReLU after the first two."""
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 3, padding=1, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, channels, 3, padding=1, bias=False),
    )


class FSR(nn.Module):
    """Separation and Recalibration of a C x H x W feature map.

    Args:
        channels: C, the channels of the feature it is applied to.
        tau: Gumbel-softmax temperature of the mask (the paper's 0.1).
        hidden: width of S and R (the authors' 64).
        separation: False removes S (Table 6 "w/o Sep"): the whole feature counts as non-robust, m = 0, so
            f~ = f + R(f), and the separation loss is not defined.
        recalibration: False removes R (Table 6 "w/o Rec"): the module passes on f+ only.
        output: which feature is passed on, one of FSR_OUTPUTS (Table 5); "f_tilde" = f+ + f~- is the paper's.

    In `train()` mode the mask is sampled; in `eval()` mode the Gumbel noise of both classes is fixed at its
    value for u = 0.5, where it cancels, so m = sigmoid(r / tau): one deterministic function for users and attackers.
    """

    __jit_unused_properties__ = ["output"]  # TorchScript: its setter is Python-only; forward reads _output

    def __init__(
        self,
        channels: int,
        tau: float = 0.1,
        hidden: int = 64,
        separation: bool = True,
        recalibration: bool = True,
        output: str = "f_tilde",
    ):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"FSR tau must be positive, got {tau}")
        if not (separation or recalibration):
            raise ValueError("FSR without both Separation and Recalibration is the identity: use the plain network")
        self.channels = channels
        self.tau = tau
        self.separation_net = conv_stack(channels, hidden) if separation else None
        self.recalibration_net = conv_stack(channels, hidden) if recalibration else None
        self.output = output  # validated by the setter below

    @property
    def output(self) -> str:
        return self._output

    @output.setter
    def output(self, value: str) -> None:
        if value not in FSR_OUTPUTS:
            raise ValueError(f"FSR output must be one of {FSR_OUTPUTS}, got {value!r}")
        needs = {"f_pos": self.separation_net, "f_neg_recal": self.recalibration_net}
        if value in needs and needs[value] is None:
            raise ValueError(f"FSR output {value!r} needs the stage this module was built without")
        self._output = value

    def mask(self, r: torch.Tensor) -> torch.Tensor:
        """Eq. 2: two-class Gumbel-softmax over [log sigmoid(r), log(1 - sigmoid(r))] at temperature tau.

        The softmax of two logits is the sigmoid of their difference, and log sigmoid(r) - log(1 - sigmoid(r)) = r,
        so m = sigmoid((r + g1 - g2) / tau): the same function without the authors' 1e-8 guards.
        """
        if self.training:
            # g = -log(-log u), u ~ U(0, 1), drawn independently for the two classes; -log u ~ Exp(1).
            g1 = -torch.empty_like(r).exponential_().log()
            g2 = -torch.empty_like(r).exponential_().log()
            r = r + (g1 - g2)
        return torch.sigmoid(r / self.tau)

    def forward(self, f: torch.Tensor, return_parts: bool = False):
        if self.separation_net is not None:
            m = self.mask(self.separation_net(f))
            f_pos, f_neg = m * f, (1 - m) * f
        else:
            m = torch.zeros_like(f)
            f_pos, f_neg = None, f
        f_neg_recal = None
        if self.recalibration_net is not None:
            f_neg_recal = f_neg + (1 - m) * self.recalibration_net(f_neg)

        if self._output == "f_tilde":
            if f_pos is None:
                out = f_neg_recal
            elif f_neg_recal is None:
                out = f_pos  # w/o Rec passes on the robust feature only
            else:
                out = f_pos + f_neg_recal
        else:
            out = {"f_pos": f_pos, "f_neg": f_neg, "f_neg_recal": f_neg_recal}[self._output]
        assert out is not None  # the output setter refuses a feature this module lacks; TorchScript needs it said

        if return_parts and not torch.jit.is_scripting():  # the parts are for training, in eager mode
            return out, FSRParts(f_pos, f_neg, f_neg_recal, m)
        return out

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, tau={self.tau}, separation={self.separation_net is not None}, "
            f"recalibration={self.recalibration_net is not None}, output={self.output!r}"
        )


def warn_unless_input_size(pixel_values: torch.Tensor, config) -> None:
    """A warning for images of another size than the one the network was trained on (its config's pretrained_cfg),
    such as a wrong image processor gives: the networks take any size, so nothing else would say so."""
    input_size = (getattr(config, "pretrained_cfg", None) or {}).get("input_size")
    if input_size and not torch.compiler.is_compiling() and tuple(pixel_values.shape[-2:]) != tuple(input_size[1:]):
        height, width = input_size[1:]
        warnings.warn(
            f"expected pixel_values of {height}x{width} pixels, the input size this network was trained on, got "
            f"{pixel_values.shape[-2]}x{pixel_values.shape[-1]}: resize images to {height}x{width}, as the image "
            "processor of the model's folder does (AutoImageProcessor.from_pretrained(<folder or repository>))",
            stacklevel=2,
        )
