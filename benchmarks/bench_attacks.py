"""PGD-20 throughput on ResNet-18-FSR: fsr_models.evaluation.attacks.pgd beside torchattacks' PGD, on the same batch
and model, timed in alternation in one run (medians), and whether both give the same adversarial predictions.

    pip install scipy && pip install --no-deps torchattacks==3.5.1   # its pinned requests~=2.25 would downgrade ours
    python benchmarks/bench_attacks.py [--batch 32] [--rounds 5] [--device cpu]

Both run eps 8/255, step eps/10, 20 steps, no random start, on the model in eval mode.
"""

from __future__ import annotations

import argparse
import statistics

import timm
import torch
import torchattacks
from bench_models import timed  # this folder's other benchmark

import fsr_models  # noqa: F401  (registers resnet18_fsr)
from fsr_models.data import load_cifar10
from fsr_models.evaluation.attacks import pgd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = timm.create_model("resnet18_fsr").to(device).eval()
    x, y = (t.to(device) for t in load_cifar10("test", limit=args.batch))
    eps = 8 / 255
    theirs = torchattacks.PGD(model, eps=eps, alpha=eps / 10, steps=20, random_start=False)
    runs = {
        "fsr_models.evaluation.attacks.pgd": lambda: pgd(model, x, y, eps, eps / 10, 20, random_start=False),
        "torchattacks.PGD": lambda: theirs(x, y),
    }
    times = {name: [] for name in runs}
    outputs = {name: fn() for name, fn in runs.items()}  # warm-up, and the results compared below
    for _ in range(args.rounds):
        for name, fn in runs.items():
            times[name].append(timed(fn, device))
    with torch.no_grad():
        same = torch.equal(*(model(o).argmax(1) for o in outputs.values()))
    diff = (outputs["fsr_models.evaluation.attacks.pgd"] - outputs["torchattacks.PGD"]).abs().max().item()
    print(
        f"device {device}, torch {torch.__version__}, torchattacks {torchattacks.__version__}, batch {args.batch}, "
        f"PGD-20 eps 8/255 step eps/10, {args.rounds} rounds, median"
    )
    for name, t in times.items():
        print(f"{name:<24} {args.batch / statistics.median(t):8.1f} images/s")
    ratio = statistics.median(times["fsr_models.evaluation.attacks.pgd"]) / statistics.median(times["torchattacks.PGD"])
    print(
        f"time ratio ours / torchattacks: {ratio:.3f}; same adversarial predictions: {same}; "
        f"max |difference| {diff:.2e}"
    )


if __name__ == "__main__":
    main()
