"""Adversarial training (AT, TRADES, MART, natural) of the zoo's networks, with or without FSR, with Accelerate.

    python training/train.py --config training/configs/resnet18_fsr_at_cifar10.yaml [--set key=value ...]
    accelerate launch --multi_gpu --num_processes 4 training/train.py --config ...      # several GPUs
    python training/train.py --resume runs/<run>                                       # continue a killed run
    python training/train.py --resume runs/<run> --epochs 150 --lr-extension hold        # extend a finished one

One YAML file per paper setting (training/configs/), overridden by `--set key=value` (YAML values). FSR networks
add the FSR losses (Eq. 5) to the method's loss, all on the adversarial batch. Attacks run on the unwrapped model in
eval mode with input gradients from `torch.autograd.grad`, so nothing leaks into the update and DDP sees one
forward/backward per step. The output folder holds:
  checkpoint/       Accelerate state after the last finished epoch (model, optimiser, RNG) and progress.json
  best/             the weights with the best PGD accuracy on the held-out validation slice (Hub layout)
  model/            best/ plus the final test metrics: what `fsr_models.hub.folders.load_model` and the Hub publish
  metrics.jsonl     one line per epoch (FSR health figures included); TensorBoard logs under tensorboard/
best/ and model/ also hold the trained FSR auxiliary heads (fsr_heads.safetensors), which fine-tuning reloads.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed

from fsr_models.training import (
    NonFiniteLoss,
    RunLog,
    TimeLimit,
    build_training,
    check_processes,
    clean_and_pgd_accuracy,
    end_if_collapsed,
    extend,
    final_test,
    initial_progress,
    note_best,
    one_line_errors,
    plan_epoch,
    plan_from_epoch,
    plan_message,
    print_checksum,
    run_header,
    save_best,
    save_checkpoint,
    start_or_resume,
    time_limit_reached,
    train_epoch,
    training_data,
    validation_batch,
    what_was_kept,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of a setting (training/configs/)")
    parser.add_argument(
        "--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="override config keys (YAML values)"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR (default: the config's output_dir) with its saved settings",
    )
    parser.add_argument("--epochs", type=int, metavar="N", help="with --resume: extend the run's plan to N epochs")
    parser.add_argument(
        "--lr-extension",
        choices=("stretch", "hold"),
        help="with --epochs: 'stretch' keeps the milestones at their fractions of the new total (the "
        "lr may rise again), 'hold' runs the added epochs at the lr the plan ends with",
    )
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU exists")
    return parser.parse_args(argv)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = start_or_resume(args.resume, args.config, args.set, args.epochs, args.lr_extension)
    cfg, out = run.cfg, run.out
    precision = "no" if cfg.precision == "fp32" else cfg.precision  # bf16: autocast
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=precision, log_with="tensorboard", project_dir=str(out))
    try:  # whatever ends the run, Accelerate's trackers are closed
        device, main_process = accelerator.device, accelerator.is_main_process
        torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed batch shapes: cuDNN times and picks kernels
        check_processes(cfg, accelerator.num_processes, run.resuming)
        set_seed(cfg.seed, device_specific=True)  # each process its own augmentation and noise draws

        data = training_data(cfg, device)
        progress = initial_progress(cfg, run.saved_progress)
        training = build_training(cfg, data, accelerator, progress, run.resuming)
        if run.resuming:
            accelerator.load_state(str(run.checkpoint))
            if args.epochs is not None:
                extend(progress, cfg, args.epochs, args.lr_extension)
            accelerator.print(f"resumed {run.checkpoint} after epoch {progress['epoch']} of {progress['epochs']}")
        elif main_process:
            out.mkdir(parents=True, exist_ok=True)
        if main_process and (not run.resuming or args.epochs is not None):
            (out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
        log = RunLog(accelerator, out, cfg)
        accelerator.print(run_header(cfg, training, data, accelerator))

        val_batch = validation_batch(cfg, training, len(data.val_x), accelerator)  # compiled: the slice at once

        def validate() -> tuple[float, float]:
            steps, step_size = cfg.val_attack_steps, cfg.attack_step_size
            val = (data.val_x, data.val_y)
            return clean_and_pgd_accuracy(
                accelerator, training.net, *val, cfg, steps, step_size, True, training.attack_net, val_batch
            )

        if not run.resuming:  # the starting point: for comparison, and when fine-tuning the weights to beat
            start_clean, start_pgd = validate()
            log.epoch(0, 0, training.net, data.val_x, start_clean, start_pgd)
            if cfg.init and note_best(progress, 0, start_clean, start_pgd) and main_process:
                save_best(training, cfg, out)
        if progress["epoch"] >= progress["epochs"] and (out / "model" / "metrics.json").is_file():
            accelerator.print(
                f"{out} finished all {progress['epochs']} epochs already: nothing to resume (extend it with "
                "--epochs N --lr-extension stretch|hold)"
            )
            return 0
        last_seconds = log.last_epoch_seconds() if run.resuming else None  # of an earlier call of this run
        if last_seconds and progress["epoch"] < progress["epochs"]:
            accelerator.print(plan_message(last_seconds, progress["epoch"], progress["epochs"], cfg.stop_after_min))

        started, stopped = time.perf_counter(), False
        seconds = last_seconds or 0.0  # the last epoch's time: an earlier call's, then this call's
        while progress["epoch"] < progress["epochs"]:
            # before the epoch, not after: a call resumed with less time than an epoch takes must not start one
            limit = time_limit_reached(cfg, time.perf_counter() - started, seconds, accelerator)
            if limit:
                accelerator.print(
                    f"{limit.value} is spent: another epoch (the last took {seconds:.1f} s) would not fit after epoch "
                    f"{progress['epoch']} of {progress['epochs']}: stopping"
                )
                stopped = limit is TimeLimit.CALL
                break
            epoch_start, epoch = time.perf_counter(), progress["epoch"] + 1
            try:
                figures = train_epoch(cfg, training, data, accelerator, epoch - 1, progress)
            except NonFiniteLoss as e:
                accelerator.print(f"\n{e}: stopping. {what_was_kept(run.checkpoint, progress['epoch'])}")
                return 3
            val_clean, val_pgd = validate()
            seconds = time.perf_counter() - epoch_start
            if epoch == plan_epoch(cfg, progress["epochs"]) and not run.resuming:  # a time budget fits the epochs
                plan_from_epoch(cfg, progress, epoch, seconds, time.perf_counter() - started, accelerator)
            log.epoch(
                epoch, progress["step"], training.net, data.val_x, val_clean, val_pgd, figures=figures, seconds=seconds
            )
            progress["epoch"], progress["train_seconds"] = epoch, progress["train_seconds"] + seconds
            if note_best(progress, epoch, val_clean, val_pgd) and main_process:
                save_best(training, cfg, out)
            end_if_collapsed(cfg, progress, val_clean, val_pgd, len(data.val_x), accelerator)
            save_checkpoint(accelerator, out, progress)
        if stopped:  # a fixed plan in pieces: the next call resumes it, the last one evaluates
            accelerator.print(
                f"checkpoint after epoch {progress['epoch']} of {progress['epochs']} in {out}; the best "
                f"weights so far are in {out / 'best'}. Continue with: python training/train.py --resume {out}"
            )
            return 0

        if cfg.init and progress["best_epoch"] == 0:
            accelerator.print(
                f"no epoch beat the starting point ({progress['best_val_pgd']:.1%} validation PGD accuracy): the "
                "best weights, and model/, are those it started from"
            )
        print_checksum(accelerator, training.net)
        final_test(accelerator, cfg, out, progress, len(data.train_x), len(data.val_x))  # and the Hub-ready model/
        return 0

    finally:
        accelerator.end_training()


if __name__ == "__main__":
    sys.exit(main())
