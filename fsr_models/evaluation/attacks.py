"""L-infinity attacks on models that map [0, 1] pixels to logits, for adversarial training and evaluation.

White-box: FGSM, PGD on cross-entropy (random start, restarts), the paper's "C&W" (PGD on the C&W margin loss),
AutoAttack through `pyautoattack` (the reference code); N-FGSM, the single-step attack of adversarial training.
Transfer: TI-FGSM and DI-FGSM crafted on a source model.
Query-based: NAttack (Li et al., ICML 2019), written from the paper.

Input gradients are taken with `torch.autograd.grad`, so no gradient reaches the parameters' `.grad` and the model
may be the unwrapped module of a DDP model. Callers choose the mode: attacks on a trained model run in `eval()` mode
(BN running statistics, deterministic FSR mask). Every function returns a detached batch within eps of x in [0, 1]
(but N-FGSM, a training attack that leaves the ball on purpose).
"""

from __future__ import annotations

import logging
import sys
from fractions import Fraction
from typing import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pixel_fraction(text: str, name: str = "eps") -> float:
    """An attack size on the [0, 1] pixel scale, written '8/255', '0.0314' or '0'; a ValueError that says what is
    wrong (with a hint for '8', which means 8/255) otherwise."""
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{text!r} is not a number or a fraction such as 8/255") from None
    if not 0 <= value <= 1:
        hint = f" (did you mean {text}/255?)" if 1 < value <= 255 and "/" not in text else ""
        raise ValueError(f"{text} is outside [0, 1]: {name} is in pixel units, and pixels are in [0, 1]{hint}")
    return float(value)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The nearest point of the eps-ball around x (L-infinity) inside [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def check_bounds(x_adv: torch.Tensor, x: torch.Tensor, eps: float, tol: float = 1e-6) -> None:
    """Raise if an adversarial batch leaves the eps-ball or [0, 1]: a broken attack must not count as robust."""
    over = (x_adv - x).abs().max().item()
    if over > eps + tol or x_adv.min() < -tol or x_adv.max() > 1 + tol:
        raise RuntimeError(
            f"adversarial batch out of bounds: |x_adv - x| max {over:.6f} > eps {eps:.6f} "
            f"or values in [{x_adv.min():.4f}, {x_adv.max():.4f}]"
        )


def cross_entropy_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="sum")


def cw_margin(logits: torch.Tensor, y: torch.Tensor, kappa: float) -> torch.Tensor:
    """Per image, -max(z_y - max_{i != y} z_i, -kappa): C&W's margin as a quantity to maximise."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return -(true - other).clamp(min=-kappa)


def cw_margin_loss(kappa: float = 50.0) -> LossFn:
    """The C&W margin summed over the batch, for `pgd` (the paper's "C&W" is PGD-30 on it with kappa 50)."""
    return lambda logits, y: cw_margin(logits, y, kappa).sum()


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
    U(-eps, eps). FGSM is `pgd(..., step_size=eps, steps=1, random_start=False)`.
    """
    loss_fn = loss_fn or cross_entropy_sum
    x = x.detach()
    if start is not None:
        x_adv = start.detach()
    elif random_start:
        x_adv = x + torch.empty_like(x).uniform_(-eps, eps)
    else:
        x_adv = x.clone()
    x_adv = project(x_adv, x, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(model(x_adv), y), x_adv)
        x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()


def fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    return pgd(model, x, y, eps, eps, 1, random_start=False)


def nfgsm(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    noise: float = 2.0,
    loss_fn: LossFn | None = None,
) -> torch.Tensor:
    """N-FGSM (de Jorge et al., NeurIPS 2022), the training attack of single-step adversarial training: uniform
    noise U(-noise * eps, noise * eps), one signed-gradient step of `step_size` (their eps) on `loss_fn(logits, y)`
    (summed cross-entropy by default),
    pixels clipped to [0, 1] after each, and **no projection back to the eps-ball**: the perturbation reaches
    (noise * eps + step_size), which is what keeps single-step training from collapsing. As their code
    (pdejorge/N-FGSM, train.py with --unif 2 --clip -1). For training only: its batch is not within eps of x."""
    x = x.detach()
    x_noisy = (x + torch.empty_like(x).uniform_(-noise * eps, noise * eps)).clamp(0, 1).requires_grad_(True)
    (grad,) = torch.autograd.grad((loss_fn or cross_entropy_sum)(model(x_noisy), y), x_noisy)
    return (x_noisy.detach() + step_size * grad.sign()).clamp(0, 1)


@torch.no_grad()
def _fooled(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1) != y


def pgd_restarts(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    restarts: int = 1,
    random_start: bool = False,
    loss_fn: LossFn | None = None,
) -> torch.Tensor:
    """PGD repeated `restarts` times (random starts after the first when restarts > 1); per image, the first
    adversarial example that fools the model is kept."""
    x_adv = pgd(model, x, y, eps, step_size, steps, random_start, loss_fn)
    for _ in range(restarts - 1):
        fooled = _fooled(model, x_adv, y)
        if fooled.all():
            break
        todo = ~fooled
        x_adv[todo] = pgd(model, x[todo], y[todo], eps, step_size, steps, True, loss_fn)
    return x_adv


class _Collect(logging.Handler):
    def __init__(self, records: list):
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelname, record.getMessage()))


def autoattack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    version: str = "standard",
    batch_size: int = 250,
    seed: int = 0,
    attacks_to_run: list[str] | None = None,
    log: list | None = None,
) -> torch.Tensor:
    """AutoAttack (APGD-CE, APGD-T, FAB-T, Square in its standard version) from the reference code, pyautoattack;
    version "custom" runs `attacks_to_run` (e.g. ["apgd-ce"]).

    The model must be in eval mode; eps is passed explicitly (pyautoattack's default is 0.3). `log`, a list, receives
    what pyautoattack logs during the run as (level, message): its warning flags (randomness, zero gradients, Square
    beyond the white-box attacks, ...) and the robust accuracy after each of its attacks.
    """
    from pyautoattack import AutoAttack

    if model.training:
        raise ValueError("AutoAttack needs the model in eval mode: call model.eval() first")
    runner = AutoAttack(
        model, eps=eps, norm="Linf", version=version, device=x.device, seed=seed, attacks=attacks_to_run
    )
    if version == "custom":
        runner.apgd.n_restarts = 1  # as the standard version runs APGD-CE (pyautoattack's custom default is 5)
    logger = logging.getLogger("auto-attack")
    handler, level = _Collect([] if log is None else log), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if log is not None else level)
    tracer = sys.gettrace()  # its check for dynamic defenses ends with sys.settrace(None): a debugger's or coverage's
    try:  # tracer would be gone for the rest of the process
        x_adv, _ = runner.run_standard_evaluation(x.contiguous(), y.contiguous(), batch_size=batch_size)
    finally:
        sys.settrace(tracer)
        logger.removeHandler(handler)
        logger.setLevel(level)
    return x_adv.detach()


def _gaussian_kernel(size: int, sigma: float, channels: int, device) -> torch.Tensor:
    ax = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    k1 = torch.exp(-(ax**2) / (2 * sigma**2))
    k2 = torch.outer(k1, k1)
    return (k2 / k2.sum()).expand(channels, 1, size, size).contiguous()


def ti_fgsm(
    source: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, kernel_size: int = 7, sigma: float = 3.0
) -> torch.Tensor:
    """Translation-invariant FGSM (Dong et al., CVPR 2019): the input gradient smoothed by a Gaussian kernel
    (a shift-averaged gradient), one step of eps. Craft on a source model, then evaluate on the target."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(cross_entropy_sum(source(x), y), x)
    kernel = _gaussian_kernel(kernel_size, sigma, x.shape[1], x.device)
    grad = F.conv2d(grad, kernel, padding=kernel_size // 2, groups=x.shape[1])
    return project(x.detach() + eps * grad.sign(), x.detach(), eps)


def _diverse(x: torch.Tensor, max_size: int, p: float) -> torch.Tensor:
    """DI's input transform: with probability p, resize to a random size in [H, max_size) and pad to max_size."""
    if torch.rand(()) >= p:
        return x
    h = x.shape[-1]
    size = int(torch.randint(h, max_size, ()))
    x = F.interpolate(x, size=(size, size), mode="nearest")
    left, top = (int(v) for v in torch.randint(0, max_size - size + 1, (2,)))
    return F.pad(x, (left, max_size - size - left, top, max_size - size - top))


def di_fgsm(
    source: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 10,
    p: float = 0.5,
    max_size: int | None = None,
) -> torch.Tensor:
    """Diverse-input iterative FGSM (Xie et al., CVPR 2019): I-FGSM with step eps/steps whose every gradient is
    taken through a random resize-and-pad of the input. Craft on a source model, then evaluate on the target."""
    max_size = max_size or int(x.shape[-1] * 1.125)
    x = x.detach()
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(cross_entropy_sum(source(_diverse(x_adv, max_size, p)), y), x_adv)
        x_adv = project(x_adv.detach() + eps / steps * grad.sign(), x, eps)
    return x_adv.detach()


@torch.no_grad()
def nattack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    population: int = 100,
    sigma: float = 0.1,
    lr: float = 0.02,
    max_queries: int = 10_000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """NAttack (Li et al., ICML 2019): a black-box attack that learns a Gaussian over perturbations in tanh space.

    Per image, mu (in arctanh space of the image) is updated by natural evolution strategies from `population`
    samples z ~ N(mu, sigma^2): each sample is mapped to [0, 1], projected into the eps-ball, and scored by the C&W
    margin with kappa 0; the z-scored losses weight the update. An image stops when mu itself (projected) fools
    the model, or when `max_queries` model evaluations are spent. Uses only the model's logits.
    Returns the adversarial batch (x where the attack failed) and the queries spent per image.
    """
    x = x.detach()
    x_adv, queries = x.clone(), torch.zeros(len(x), dtype=torch.long, device=x.device)
    base = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    for i in range(len(x)):
        mu = torch.randn_like(x[i]) * 0.001
        while queries[i] + population + 1 <= max_queries:
            candidate = project((torch.tanh(base[i] + mu) + 1) / 2, x[i], eps)[None]
            queries[i] += 1
            if model(candidate).argmax(1).item() != y[i].item():
                x_adv[i] = candidate[0]
                break
            noise = torch.randn(population, *x[i].shape, device=x.device)
            samples = project((torch.tanh(base[i] + mu + sigma * noise) + 1) / 2, x[i], eps)
            queries[i] += population
            scores = cw_margin(model(samples), y[i].expand(population), kappa=0.0)  # higher: closer to fooling
            scores = (scores - scores.mean()) / (scores.std() + 1e-7)
            mu = mu + lr / (population * sigma) * (scores.view(-1, 1, 1, 1) * noise).sum(0)
    return x_adv, queries
