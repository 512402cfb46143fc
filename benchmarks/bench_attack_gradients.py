"""The training attack through torch.compile with and without input-only gradients (`input_gradient_twin`): the
same adversarial images, and the attack's time of each, measured in alternation in one run (medians).

    python benchmarks/bench_attack_gradients.py [--batch 128] [--widths 64 128 256 512] [--rounds 5] [--mode default]

The attack is the trainer's: PGD-10, eps 8/255, step 2/255, random start (the same draw for every path), on
ResNet-18-FSR in eval mode. "compiled" runs it through `torch.compile(net)`, whose backward computes every
parameter's gradient too; "compiled, input only" through `torch.compile(input_gradient_twin(net))`; "eager" is the
reference. On a CPU, inductor compiles for a minute or two first; `--widths 16 32 64 128` makes a quick check.
"""

from __future__ import annotations

import argparse
import statistics

import timm
import torch
from bench_models import timed  # this folder's other benchmark

import fsr_models  # noqa: F401  (registers resnet18_fsr)
from fsr_models.data import load_cifar10
from fsr_models.evaluation.attacks import pgd
from fsr_models.training import input_gradient_twin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--widths", type=int, nargs=4, default=[64, 128, 256, 512])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mode", default="default", help="torch.compile mode (reduce-overhead on a GPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = timm.create_model("resnet18_fsr", widths=args.widths).to(device).eval()
    x, y = (t.to(device) for t in load_cifar10("test", limit=args.batch))
    eps, step = 8 / 255, 2 / 255

    def attack(model):
        def run():
            torch.manual_seed(1)  # the random start: the same for every path
            return pgd(model, x, y, eps, step, 10, random_start=True)

        return run

    runs = {
        "eager": attack(net),
        "compiled": attack(torch.compile(net, mode=args.mode)),
        "compiled, input only": attack(torch.compile(input_gradient_twin(net), mode=args.mode)),
    }
    images = {name: fn() for name, fn in runs.items()}  # compiles; the images compared below
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            times[name].append(timed(fn, device))
    medians = {name: statistics.median(t) for name, t in times.items()}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{where}, torch {torch.__version__}, batch {args.batch}, widths {args.widths}, mode {args.mode}")
    for name, seconds in medians.items():
        differ = (images[name] != images["compiled"]).float().mean().item()
        print(
            f"  {name:22s} {seconds * 1000:8.1f} ms per attack   pixels that differ from 'compiled': {differ:.2%}, "
            f"largest difference {(images[name] - images['compiled']).abs().max().item() * 255:.3g}/255"
        )
    ratio = medians["compiled"] / medians["compiled, input only"]
    print(f"input-only gradients: the compiled attack runs {ratio:.2f}x as fast")


if __name__ == "__main__":
    main()
