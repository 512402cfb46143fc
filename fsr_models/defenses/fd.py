"""Feature Denoising (FD), Xie et al., "Feature Denoising for Improving Adversarial Robustness", CVPR 2019, Sec. 3-4.

Adversarial perturbations that are small in the pixels become large noise in the features; a non-local means filter
(a weighted average of the feature over all positions) removes it, and a 1x1 conv with a residual connection keeps
the block from losing the signal. Only the paper's Gaussian (softmax) and dot-product filters, the ones the authors'
code releases, are here.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# TF's variance_scaling(scale=2, mode='fan_out') draws a normal truncated at 2 std: its std is divided by this factor
# (the std of a unit normal truncated at +-2) so that the weights keep the variance 2 / fan_out.
TRUNCATED_NORMAL_STD = 0.87962566103423978


def non_local_means(x: torch.Tensor, theta: torch.Tensor, phi: torch.Tensor, softmax: bool) -> torch.Tensor:
    """The filter y_i = sum_j w(i, j) x_j over the H x W positions of x (N x C x H x W), from the embeddings theta
    and phi (N x d x H x W): w(i, j) = softmax_j(theta_i . phi_j / sqrt(d)) (Gaussian) or theta_i . phi_j / HW
    (dot product)."""
    theta, phi, g = theta.flatten(2), phi.flatten(2), x.flatten(2)
    affinity = torch.bmm(theta.transpose(1, 2), phi)  # (N, HW_i, HW_j)
    if softmax:
        weights = F.softmax(affinity * theta.shape[1] ** -0.5, dim=-1)
    else:
        weights = affinity / g.shape[-1]
    return torch.bmm(g, weights.transpose(1, 2)).view_as(x)


class DenoisingBlock(nn.Module):
    """x + BN(Conv1x1(non_local_means(x))) (Fig. 4 of the paper), with theta, phi 1x1 convs to C/2 channels
    (`embed`; else theta = phi = x) and g = x.

    Initialised as the authors' code does: theta, phi ~ N(0, 0.01^2); the 1x1 conv by TF's variance scaling (2 /
    fan_out, truncated normal); BN's gamma 0, so that the block starts as the identity and training adds the filter
    only where it helps.
    """

    def __init__(self, channels: int, embed: bool = True, softmax: bool = True, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.softmax = softmax
        self.theta = nn.Conv2d(channels, channels // 2, 1, bias=False, **dd) if embed else nn.Identity()
        self.phi = nn.Conv2d(channels, channels // 2, 1, bias=False, **dd) if embed else nn.Identity()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False, **dd)
        self.bn = nn.BatchNorm2d(channels, **dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for embedding in (self.theta, self.phi):
            if isinstance(embedding, nn.Conv2d):
                nn.init.normal_(embedding.weight, 0.0, 0.01)
        std = math.sqrt(2.0 / self.conv.out_channels) / TRUNCATED_NORMAL_STD
        nn.init.trunc_normal_(self.conv.weight, 0.0, std, -2 * std, 2 * std)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn(self.conv(non_local_means(x, self.theta(x), self.phi(x), self.softmax)))
