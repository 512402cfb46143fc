"""Forward and training-step throughput of each network with and without FSR, and the FSR / plain time ratio.

    python benchmarks/bench_models.py [--rounds 5] [--batch 32] [--device cpu]

Plain and FSR versions are timed in alternation within one run, and the median of the rounds is reported, so that
the ratio is measured under the same machine load (this machine is shared and noisy). The training step is
forward, cross-entropy (plus the FSR losses for FSR networks, as training uses them), backward and an SGD step.
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


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def make_steps(name: str, batch: int, device: torch.device):
    """A forward-only and a training-step closure for `name` on a random batch."""
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

    def train_step():
        model.train()
        out = model(x, return_fsr=fsr_loss is not None)
        if fsr_loss is None:
            loss = F.cross_entropy(out, y)
        else:
            loss = F.cross_entropy(out.logits, y) + fsr_loss(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return forward, train_step


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
    print(f"{'network':<16} {'batch':>5} {'fwd img/s':>10} {'train img/s':>12} {'fwd FSR/plain':>14} {'train FSR/plain':>16}")
    for backbone in args.backbones:
        fsr_name, plain_name = fsr_models.ARCHITECTURES[backbone]
        batch = max(1, args.batch // 4) if backbone.startswith("wrn") else args.batch
        steps = {name: make_steps(name, batch, device) for name in (plain_name, fsr_name)}
        times = {(name, kind): [] for name in steps for kind in (0, 1)}
        for name, fns in steps.items():  # warm-up: allocator, oneDNN / cuDNN algorithm choice
            for fn in fns:
                fn()
        for _ in range(args.rounds):
            for name, fns in steps.items():
                for kind, fn in enumerate(fns):
                    times[name, kind].append(timed(fn, device))
        median = {key: statistics.median(value) for key, value in times.items()}
        for name in steps:
            ratio = ("", "")
            if name == fsr_name:
                ratio = tuple(f"{median[fsr_name, k] / median[plain_name, k]:.3f}" for k in (0, 1))
            print(f"{name:<16} {batch:>5} {batch / median[name, 0]:>10.1f} {batch / median[name, 1]:>12.1f} "
                  f"{ratio[0]:>14} {ratio[1]:>16}")


if __name__ == "__main__":
    main()
