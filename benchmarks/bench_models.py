"""Throughput of each network with and without FSR, and the FSR / plain time ratio, for four steps: forward (eval), a
training step (forward, cross-entropy plus the FSR losses for FSR networks, backward, SGD step), and the two
adversarial-training steps of training/train.py (`fsr_models.training.adversarial_loss`: the attack in eval mode,
then the losses in train mode; then backward and the SGD step): single-step N-FGSM (the recipe of
training/configs/vgg16_fsr_at_cifar10_nfgsm_15ep.yaml) and the paper's PGD-10. Each step's work in GFLOP per image
(conv and linear layers, forward and backward, 2 x multiply-adds, counted once by torch.utils.flop_counter) gives the
GFLOP/s achieved; the last columns are the minutes of one CIFAR-10 epoch (49,000 images) of each AT step.

    python benchmarks/bench_models.py [--rounds 5] [--batch 32] [--device cpu] [--backbones resnet18 ...]
    python benchmarks/bench_models.py --batch 128 --precision bf16 --channels-last     # the CPU's fast path
    python benchmarks/bench_models.py --batch 512 --precision bf16 --channels-last --compile reduce-overhead
                                                          # the GPU's training fast path (CUDA graphs)

`--compile` runs every step through `torch.compile` (the time of the first call, compilation included, is printed)
and checks that the FSR mask's Gumbel noise is drawn afresh at every call of the compiled train-mode graph. As in
training, the compiled attack computes the image's gradient only (`input_gradient_twin`); `--attack-grads all` times
it through the network itself, whose compiled backward computes every parameter's gradient too.
benchmarks/cpu_peak.py gives the peak those GFLOP/s compare with.

Plain and FSR versions are timed in alternation within one run, and the median of the rounds is reported, so that
the ratio is measured under the same machine load (this machine is shared and noisy).
The paper reports about 5% overhead for FSR (114 s vs 120 s per PGD-10 epoch of ResNet-18 on its GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

import fsr_models
from fsr_models.training import COMPILE_MODES, adversarial_loss, input_gradient_twin, load_config

CIFAR10_EPOCH = 49_000  # training images of an epoch (50,000 less the 1,000 held out)
NFGSM_CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "vgg16_fsr_at_cifar10_nfgsm_15ep.yaml"
KINDS = ("forward", "train", "N-FGSM AT", "PGD-10 AT")


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def make_steps(name: str, batch: int, device: torch.device, args: argparse.Namespace, **model_args):
    """Forward, training-step and PGD-10 AT-step closures for `name` (built with `model_args`) on a random batch, and
    the compiled (or eager) network they run."""
    model = timm.create_model(name, **model_args).to(device)
    fsr_loss = fsr_models.FSRLoss.for_model(model).to(device) if model.fsr_modules() else None
    params = list(model.parameters()) + (list(fsr_loss.parameters()) if fsr_loss else [])
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    if args.channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    net = model if args.compile == "none" else torch.compile(model, mode=args.compile)
    attack_net = net
    if args.compile != "none" and args.attack_grads == "input":
        attack_net = torch.compile(input_gradient_twin(model), mode=args.compile)
    pgd10 = load_config(None, ["attack_steps=10"])  # the paper's PGD-10 AT step
    nfgsm = load_config(str(NFGSM_CONFIG), [])  # the single-step (N-FGSM) AT step
    bf16 = args.precision == "bf16"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    @torch.no_grad()
    def forward():
        net.eval()
        with autocast():
            net(x)

    def train_step():
        net.train()
        with autocast():
            out = net(x, return_fsr=fsr_loss is not None)
            loss = F.cross_entropy(out, y) if fsr_loss is None else F.cross_entropy(out.logits, y) + fsr_loss(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def at_step(cfg):
        def step():
            with autocast():
                loss = adversarial_loss(cfg, attack_net, net, fsr_loss, x, y)[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    return (forward, train_step, at_step(nfgsm), at_step(pgd10)), net


def fresh_noise(net, device: torch.device) -> bool:
    """Whether two calls of the train-mode FSR network draw different masks (under CUDA graphs too)."""
    net.train()
    x = torch.rand(2, 3, 32, 32, device=device)
    with torch.no_grad():
        first = net(x, return_fsr=True).fsr_parts[0].mask.clone()  # a replay may reuse the output's memory
        return not torch.equal(first, net(x, return_fsr=True).fsr_parts[0].mask)


def step_options(parser: argparse.ArgumentParser) -> None:
    """The options of how a step runs (`make_steps`), shared with bench_at_step.py."""
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", default="none", choices=COMPILE_MODES, help="torch.compile mode of every step")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="bf16: autocast, as training")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format, as training")
    parser.add_argument(
        "--attack-grads", default="input", choices=("input", "all"), help="what the compiled attack's backward computes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per network (median reported)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (WRN-34-10 uses a quarter of it)")
    parser.add_argument("--backbones", nargs="+", default=list(fsr_models.ARCHITECTURES))
    step_options(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(
        f"device {device} ({where}), "
        f"torch {torch.__version__}, {args.precision}{', channels_last' if args.channels_last else ''}, compile "
        f"{args.compile}, {args.rounds} rounds, median"
    )
    print(
        f"{'network':<16} {'batch':>5} "
        + " ".join(f"{k + ' img/s':>15} {'GFLOP/s':>7} {'FSR/plain':>9}" for k in KINDS)
        + f" {'N-FGSM epoch min':>16} {'PGD-10 epoch min':>16}"
    )
    eager = argparse.Namespace(**{**vars(args), "compile": "none"})
    for backbone in args.backbones:
        fsr_name, plain_name = fsr_models.ARCHITECTURES[backbone]
        batch = max(1, args.batch // 4) if backbone.startswith("wrn") else args.batch
        built = {name: make_steps(name, batch, device, args) for name in (plain_name, fsr_name)}
        steps = {name: fns for name, (fns, _) in built.items()}
        flops = {name: step_flops(name, batch, device, eager) for name in steps}
        times = {(name, kind): [] for name in steps for kind in range(len(KINDS))}
        for name, fns in steps.items():  # warm-up: compilation, allocator, oneDNN / cuDNN algorithm choice
            first = [timed(fn, device) for fn in fns] + [timed(fn, device) for fn in fns]
            if args.compile != "none":
                print(f"{name}: first calls (compilation) {sum(first):.1f} s")
        if args.compile != "none":
            print(
                f"{fsr_name}: FSR mask noise drawn afresh at every call of the compiled graph: "
                f"{'yes' if fresh_noise(built[fsr_name][1], device) else 'NO'}"
            )
        for _ in range(args.rounds):
            for name, fns in steps.items():
                for kind, fn in enumerate(fns):
                    times[name, kind].append(timed(fn, device))
        median = {key: statistics.median(value) for key, value in times.items()}
        for name in steps:
            cells = []
            for k in range(len(KINDS)):
                ratio = f"{median[fsr_name, k] / median[plain_name, k]:.3f}" if name == fsr_name else ""
                gflops = flops[name][k] / median[name, k] / 1e9
                cells.append(f"{batch / median[name, k]:>15.1f} {gflops:>7.0f} {ratio:>9}")
            epochs = [CIFAR10_EPOCH / (batch / median[name, k]) / 60 for k in (2, 3)]
            print(f"{name:<16} {batch:>5} " + " ".join(cells) + "".join(f" {m:>16.1f}" for m in epochs))


class CountFlops(TorchDispatchMode):
    """The floating-point operations of the aten calls run under it, by torch.utils.flop_counter's formulas (conv and
    matrix products, forward and backward). torch's FlopCounterMode itself tracks modules with hooks that
    torch.autograd.grad, which the attacks call, does not support."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._overloadpacket in flop_registry:
            self.total += flop_registry[func._overloadpacket](*args, **(kwargs or {}), out_val=out)
        return out


def step_flops(name: str, batch: int, device: torch.device, args: argparse.Namespace) -> list[int]:
    """The floating-point operations of one call of each step, counted on an eager build: they do not depend on
    precision, memory format or compilation."""
    fns, _ = make_steps(name, batch, device, args)
    counts = []
    for fn in fns:
        with CountFlops() as counter:
            fn()
        counts.append(counter.total)
    return counts


if __name__ == "__main__":
    main()
