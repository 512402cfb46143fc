"""Images per second of an adversarial-training step (`bench_models.make_steps`: PGD-10 by default, or N-FGSM) of one
network, in this process, for `gpu_pair_check.sh`, which runs it alone, twice at once and under CUDA MPS (on a CPU:
two single-thread processes at once against one process on every core).

    python benchmarks/bench_at_step.py --name resnet18_fsr --batch 128 --precision bf16 --channels-last \
        --compile reduce-overhead [--attack-grads all] [--seconds 20]

Prints the step's images per second over `--seconds` of steps after two warm-up steps (compilation; with `--barrier`,
after every process of a group has warmed up), and last a line `at_step_images_per_s <value>` for scripts.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from bench_models import make_steps, step_options, timed  # this folder's other benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="resnet18_fsr")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the timed steps run")
    parser.add_argument("--widths", type=int, nargs=4, help="narrower ResNet-18 stages (a quick check on a CPU)")
    parser.add_argument("--barrier", type=Path, help="a folder where --parties processes meet after their warm-up")
    parser.add_argument("--parties", type=int, default=1)
    parser.add_argument(
        "--barrier-timeout", type=float, default=600, help="seconds to wait for the others at the barrier (then fail)"
    )
    parser.add_argument("--step", choices=("pgd10", "nfgsm"), default="pgd10", help="the training attack of the step")
    step_options(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    model_args = {"widths": args.widths} if args.widths else {}
    (*_, nfgsm_step, pgd10_step), _ = make_steps(args.name, args.batch, device, args, **model_args)
    at_step = nfgsm_step if args.step == "nfgsm" else pgd10_step
    warm_up = timed(at_step, device) + timed(at_step, device)
    if args.barrier:  # processes run at once: each times its steps only while the others run theirs
        (args.barrier / str(os.getpid())).touch()
        waited = time.monotonic()
        while len(list(args.barrier.iterdir())) < args.parties:
            if time.monotonic() - waited > args.barrier_timeout:
                arrived = len(list(args.barrier.iterdir()))
                raise SystemExit(
                    f"error: {arrived} of {args.parties} processes reached the barrier within {args.barrier_timeout:g} "
                    "s: the others failed or are still warming up"
                )
            time.sleep(0.05)
    steps, spent = 0, 0.0
    while spent < args.seconds:
        spent += timed(at_step, device)
        steps += 1
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{where}: {args.name} {args.step} AT step, batch {args.batch}, {args.precision}"
        f"{', channels_last' if args.channels_last else ''}, compile {args.compile}, attack gradients "
        f"{args.attack_grads}: warm-up {warm_up:.1f} s, {steps} steps in {spent:.1f} s"
    )
    print(f"at_step_images_per_s {steps * args.batch / spent:.1f}")


if __name__ == "__main__":
    main()
