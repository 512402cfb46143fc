"""What a run writes: one line per epoch (metrics.jsonl, TensorBoard, the console, FSR health included), the best
weights, and at the end the final test of the best weights and the Hub-ready `model/` folder."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from fsr_models.data import data_source, load_dataset, to_float
from fsr_models.defenses import aux_defense
from fsr_models.evaluation.protocol import attack_settings, pgd_settings
from fsr_models.evaluation.report import make_report
from fsr_models.fsr import fsr_health, fsr_health_problems
from fsr_models.hub.folders import FSR_HEADS_NAME, load_model, save_folder
from fsr_models.hub.weight_files import zoo_name
from fsr_models.training.checkpoint import swap
from fsr_models.training.config import TrainConfig, portable_config
from fsr_models.training.loop import Training, TrainingData, clean_and_pgd_accuracy


def run_header(cfg: TrainConfig, training: Training, data: TrainingData, accelerator: Accelerator) -> str:
    """One line on what trains where: network, method, data, processes, learning rate."""
    defense = aux_defense(training.net)
    joint = f" + {defense.upper()} (its joint loss, defense_beta {cfg.defense_beta:g})" if defense else ""
    return (
        f"{type(training.net).__name__} {cfg.init or cfg.model}: {cfg.method}{' + FSR' if training.heads else ''}"
        f"{joint}"
        f"{' (N-FGSM)' if cfg.attack == 'nfgsm' else ''} on "
        f"{cfg.dataset}, {len(data.train_x)} train / {len(data.val_x)} val images, "
        f"{accelerator.num_processes} process(es) on {accelerator.device}, {cfg.precision}, lr {training.lr:g}"
        f"{' (cyclic)' if cfg.lr_schedule == 'cyclic' else ''}"
        f"{f', {cfg.warmup_epochs:g} warm-up epochs' if cfg.warmup_epochs else ''}"
    )


def health_line(health: dict) -> str:
    """The FSR health figures of one epoch, compactly: R's contribution, live units of S and R, the mask."""
    return " ".join(
        f"{name}: R {h.get('r_contribution', 0):.3g} live S {h.get('s_live_1', 0):.0%}/{h.get('s_live_2', 0):.0%} "
        f"R {h.get('r_live_1', 0):.0%}/{h.get('r_live_2', 0):.0%} mask {h.get('mask_mean', 0):.2f} "
        f"(>0.99 {h.get('mask_above_0.99', 0):.0%}, <0.01 {h.get('mask_below_0.01', 0):.0%})"
        for name, h in health.items()
    )


class RunLog:
    """The epochs' figures: a line of metrics.jsonl (main process), TensorBoard and the console."""

    def __init__(self, accelerator: Accelerator, out: Path, cfg: TrainConfig):
        self.accelerator, self.out = accelerator, out
        accelerator.init_trackers(
            "tensorboard",
            config={k: v for k, v in dataclasses.asdict(cfg).items() if isinstance(v, (int, float, str, bool))},
        )

    def __call__(self, metrics: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
        self.accelerator.log(metrics, step=metrics["epoch"])
        self.accelerator.print(
            " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items() if "/" not in k)
        )

    def epoch(
        self,
        epoch: int,
        step: int,
        net,
        val_x: torch.Tensor,
        val_clean: float,
        val_pgd: float,
        figures: dict | None = None,
        seconds: float | None = None,
    ) -> None:
        """Log an epoch (epoch 0: the starting point): SGD steps so far, the training figures of `train_epoch`,
        validation accuracy, speed and the FSR health figures on the validation images."""
        timing = {"images_per_s": figures.pop("images") / seconds, "seconds": seconds} if figures else {}
        self(
            {
                "epoch": epoch,
                "step": step,
                **(figures or {}),
                "val_clean_acc": val_clean,
                "val_pgd_acc": val_pgd,
                **timing,
                **self.health(net, val_x),
            }
        )

    def health(self, net, x: torch.Tensor) -> dict:
        """FSR health figures of the network on the clean images x (main process), flat for the logs."""
        if not (net.fsr_modules() and self.accelerator.is_main_process):
            return {}
        figures = fsr_health(net, to_float(x))
        self.accelerator.print(health_line(figures))
        for problem in fsr_health_problems(figures):
            self.accelerator.print(f"warning: {problem}")
        return {f"{name}/{k}": v for name, h in figures.items() for k, v in h.items()}

    def last_epoch_seconds(self) -> float | None:
        """The time of the last epoch logged by an earlier call of this run, if any."""
        seconds = logged_epoch_seconds(self.out)
        return seconds[-1] if seconds else None


def logged_epoch_seconds(out: Path) -> list[float]:
    """The time of each epoch a run's metrics.jsonl logged, in order (none for a run without one)."""
    if not (out / "metrics.jsonl").is_file():
        return []
    lines = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    return [m["seconds"] for m in lines if "seconds" in m]


def what_was_kept(checkpoint: Path, epochs_done: int) -> str:
    """What a run that stops on a non-finite loss leaves, and what to do."""
    kept = (
        f"{checkpoint} still holds the last good epoch ({epochs_done}) and best/ its best weights"
        if epochs_done
        else "no epoch had finished, so nothing was saved"
    )
    return f"{kept}. Lower lr_per_128 (or check the data) and start a new run."


def shard_size(cfg: TrainConfig) -> int | str:
    """The largest weights file a run writes: `shard_mb` MiB, so that a run's folders come back from machines that
    limit file sizes, else one file."""
    return cfg.shard_mb * 2**20 if cfg.shard_mb else "5GB"


def save_best(training: Training, cfg: TrainConfig, out: Path) -> None:
    """The network as best/ (with its FSR heads, sharded as model/ is), swapped in whole."""
    shutil.rmtree(out / "best.tmp", ignore_errors=True)
    fields = dict(lambda_sep=cfg.lambda_sep, lambda_rec=cfg.lambda_rec)
    save_folder(training.net, out / "best.tmp", max_shard_size=shard_size(cfg), fsr_loss=training.heads, **fields)
    swap(out / "best.tmp", out / "best")


def final_test(accelerator: Accelerator, cfg: TrainConfig, out: Path, progress: dict, n_train: int, n_val: int) -> dict:
    """The best weights on the test set with the paper's protocol (PGD, step eps/10, no random start), written with
    them as the Hub-ready model/ folder: metrics.json holds the run's figures and, under `test`, the test as an
    evaluation report (the format of `python -m fsr_models.evaluate`). Returns what metrics.json holds."""
    best = load_model(out / "best").to(accelerator.device)
    test_x, test_y, _ = load_dataset(cfg.dataset, "test", cfg.data_dir, cfg.test_size, download=cfg.download)
    test_x, test_y = test_x.to(accelerator.device), test_y.to(accelerator.device)
    pgd = pgd_settings(cfg.eval_attack_steps, cfg.eps)
    start = time.perf_counter()
    clean, robust = clean_and_pgd_accuracy(
        accelerator, best, test_x, test_y, cfg, pgd["steps"], pgd["step_size"], pgd["random_start"]
    )
    name = f"pgd{cfg.eval_attack_steps}"
    result = {
        "accuracy": {"natural": clean, name: robust},
        "ensemble_over": [],
        "settings": {"natural": attack_settings("natural", cfg.eps, False), name: pgd},
        "seconds": {"natural and " + name: time.perf_counter() - start},
    }
    results = {
        "test": make_report(
            zoo_name(cfg.init) if cfg.init else cfg.model,
            cfg.dataset,
            data_source(cfg.data_dir, "test", cfg.dataset),
            len(test_x),
            cfg.eps,
            False,
            result,
        ),
        "best_val_pgd_acc": progress["best_val_pgd"],
        "best_epoch": progress["best_epoch"],
        "epochs": progress["epoch"],
        "train_images": n_train,
        "val_images": n_val,
        "sgd_steps": progress["step"],
        "train_seconds": progress["train_seconds"],
        "eps": cfg.eps,
    }
    for key in ("extensions", "collapse"):
        if key in progress:
            results[key] = progress[key]
    if cfg.init:
        results["init"] = start_record(cfg.init)
    if accelerator.is_main_process:
        if best.fsr_modules():
            results["fsr_health"] = fsr_health(best, to_float(test_x))
            for problem in fsr_health_problems(results["fsr_health"]):
                accelerator.print(f"warning: the saved model's {problem}")
        shutil.rmtree(out / "model.tmp", ignore_errors=True)
        save_folder(
            best,
            out / "model.tmp",
            max_shard_size=shard_size(cfg),
            lambda_sep=cfg.lambda_sep,
            lambda_rec=cfg.lambda_rec,
        )
        if (out / "best" / FSR_HEADS_NAME).is_file():
            shutil.copyfile(out / "best" / FSR_HEADS_NAME, out / "model.tmp" / FSR_HEADS_NAME)
        results["train_config"] = portable_config(dataclasses.asdict(cfg))  # no path of this machine
        (out / "model.tmp" / "metrics.json").write_text(json.dumps(results, indent=2))
        swap(out / "model.tmp", out / "model")
    summary = {
        "test_images": len(test_x),
        **{f"{k}_acc": v for k, v in result["accuracy"].items()},
        **{k: v for k, v in results.items() if k not in ("test", "train_config", "fsr_health")},
    }
    accelerator.print(json.dumps(summary))
    accelerator.print(
        f"Hub-ready folder: {out / 'model'} (fsr_models.hub.folders.load_model, timm 'local-dir:', or "
        "transformers AutoModelForImageClassification.from_pretrained after `import fsr_models`)"
    )
    return results


def start_record(init: str) -> dict:
    """What a fine-tuned model started from, for its card: the zoo name of the model and, where its folder records
    one, its final test (`test` of its metrics.json)."""
    record = {"model": zoo_name(init)}
    for folder in (Path(init), Path(init) / "model"):
        if (folder / "metrics.json").is_file():
            test = json.loads((folder / "metrics.json").read_text()).get("test")
            if test:
                record["test"] = test
            break
    return record


def print_checksum(accelerator: Accelerator, net) -> None:
    """Every process reports its weights (they must agree), in one write: print() writes text and newline apart."""
    digest = sum(p.double().sum().item() * (i + 1) for i, p in enumerate(net.state_dict().values()))
    sys.stdout.write(f"[rank {accelerator.process_index}] final weights checksum {digest!r}\n")
    sys.stdout.flush()
