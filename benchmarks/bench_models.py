"""Throughput of each network with and without FSR, and the FSR / plain time ratio, for three steps:
forward (eval), a training step (forward, cross-entropy plus the FSR losses for FSR networks, backward, SGD step),
and the PGD-10 adversarial-training step of training/train.py (PGD-10 in eval mode, then the training step).

    python benchmarks/bench_models.py [--rounds 5] [--batch 32] [--device cpu] [--backbones resnet18 ...]

Plain and FSR versions are timed in alternation within one run, and the median of the rounds is reported, so that
the ratio is measured under the same machine load (this machine is shared and noisy).
The paper reports about 5% overhead for FSR (114 s vs 120 s per PGD-10 epoch of ResNet-18 on its GPU).
"""
from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import fsr_models
from fsr_models.attacks import pgd


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def make_steps(name: str, batch: int, device: torch.device):
    """Forward, training-step and PGD-10 AT-step closures for `name` on a random batch."""
    model = timm.create_model(name).to(device)
    fsr_loss = fsr_models.FSRLoss.for_model(model).to(device) if model.fsr_modules() else None
    params = list(model.parameters()) + (list(fsr_loss.parameters()) if fsr_loss else [])
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    @torch.no_grad()
    def forward():
        model.eval()
        model(x)

    def train_step(inputs=x):
        model.train()
        out = model(inputs, return_fsr=fsr_loss is not None)
        if fsr_loss is None:
            loss = F.cross_entropy(out, y)
        else:
            loss = F.cross_entropy(out.logits, y) + fsr_loss(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def at_step():
        model.eval()
        train_step(pgd(model, x, y, 8 / 255, 2 / 255, 10))

    return forward, train_step, at_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per network (median reported)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (WRN-34-10 uses a quarter of it)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbones", nargs="+", default=list(fsr_models.ARCHITECTURES))
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"torch {torch.__version__}, {args.rounds} rounds, median")
    kinds = ("forward", "train", "PGD-10 AT")
    print(f"{'network':<16} {'batch':>5} " + " ".join(f"{k + ' img/s':>15} {'FSR/plain':>9}" for k in kinds))
    for backbone in args.backbones:
        fsr_name, plain_name = fsr_models.ARCHITECTURES[backbone]
        batch = max(1, args.batch // 4) if backbone.startswith("wrn") else args.batch
        steps = {name: make_steps(name, batch, device) for name in (plain_name, fsr_name)}
        times = {(name, kind): [] for name in steps for kind in range(len(kinds))}
        for name, fns in steps.items():  # warm-up: allocator, oneDNN / cuDNN algorithm choice
            for fn in fns:
                fn()
        for _ in range(args.rounds):
            for name, fns in steps.items():
                for kind, fn in enumerate(fns):
                    times[name, kind].append(timed(fn, device))
        median = {key: statistics.median(value) for key, value in times.items()}
        for name in steps:
            cells = []
            for k in range(len(kinds)):
                ratio = f"{median[fsr_name, k] / median[plain_name, k]:.3f}" if name == fsr_name else ""
                cells.append(f"{batch / median[name, k]:>15.1f} {ratio:>9}")
            print(f"{name:<16} {batch:>5} " + " ".join(cells))


if __name__ == "__main__":
    main()
