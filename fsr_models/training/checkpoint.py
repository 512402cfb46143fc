"""A run's folder and its progress: where a run starts or resumes, the plan of epochs and learning-rate drops
(which a time budget or an extension moves), and checkpoints swapped in so that a kill at any moment leaves one
whole checkpoint."""

from __future__ import annotations

import enum
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast

from fsr_models.training.config import (
    COLLAPSE_FLOOR,
    ConfigError,
    TrainConfig,
    load_config,
    milestone_epochs,
    resumed_config,
)


@dataclass
class RunStart:
    """What a call of the trainer starts from: the settings, the run folder and, when it resumes, the checkpoint and
    the progress saved in it."""

    cfg: TrainConfig
    out: Path
    checkpoint: Path
    saved_progress: dict | None  # None: a new run

    @property
    def resuming(self) -> bool:
        return self.saved_progress is not None


def start_or_resume(
    resume: str | None, config: str | None, overrides: list[str], epochs: int | None, lr_extension: str | None
) -> RunStart:
    """The run that `--resume [RUN_DIR]`, `--config`, `--set`, `--epochs` and `--lr-extension` describe; what cannot
    run (a folder that already holds a run, a resume without a checkpoint, an extension that is none) is refused."""
    resuming = resume is not None
    if (epochs is not None or lr_extension) and not resuming:
        raise ConfigError("--epochs and --lr-extension extend an existing run: use them with --resume RUN_DIR")
    if (epochs is None) != (lr_extension is None):
        raise ConfigError("extending a run takes both --epochs N and --lr-extension stretch|hold")
    if resuming:
        out = Path(resume or load_config(config, overrides).output_dir)
        cfg = resumed_config(out, config, overrides)
    else:
        cfg = load_config(config, overrides)
        out = Path(cfg.output_dir)
    checkpoint = out / "checkpoint"
    if not checkpoint.exists() and (out / "checkpoint.old").exists():  # killed between the two renames
        checkpoint = out / "checkpoint.old"
    if resuming and not checkpoint.exists():
        raise FileNotFoundError(
            f"--resume: no checkpoint in {out} (the run stopped before its first epoch ended); "
            "start it again in a new output_dir"
        )
    if not resuming and (out / "config.yaml").exists():
        raise FileExistsError(
            f"{out} already holds a run: pass --resume {out} to continue it, or choose another output_dir"
        )
    saved = json.loads((checkpoint / "progress.json").read_text()) if resuming else None
    if epochs is not None and epochs <= saved["epochs"]:
        raise ConfigError(f"--epochs {epochs}: {out} already plans {saved['epochs']} epochs; give more")
    return RunStart(cfg, out, checkpoint, saved)


def initial_progress(cfg: TrainConfig, saved: dict | None) -> dict:
    """The progress of the run: epochs done and planned, SGD steps, the best validation PGD accuracy and its epoch,
    the milestone epochs and the training seconds summed over calls; saved, or fresh for a new run."""
    fresh = {
        "epoch": 0,
        "epochs": cfg.epochs,
        "step": 0,
        "best_val_pgd": -1.0,
        "best_epoch": 0,
        "milestones": milestone_epochs(cfg.lr_milestones, cfg.epochs),
        "train_seconds": 0.0,  # summed over the calls of a plan in pieces
    }
    if saved is not None and set(fresh) - set(saved):
        raise ConfigError(
            f"--resume: the checkpoint's progress.json lacks {sorted(set(fresh) - set(saved))}: it was written by "
            "another version of fsr-zoo; resume it with that version, or start a new run"
        )
    return saved or fresh


def extend(progress: dict, cfg: TrainConfig, epochs: int, how: str) -> None:
    """Extend the plan to `epochs`: 'stretch' puts the milestones at their fractions of the new total, 'hold' keeps
    the lr the plan ended with for the added epochs (a milestone at the plan's end was never reached)."""
    if cfg.lr_schedule == "cyclic":
        raise ConfigError(
            "--epochs: a cyclic lr_schedule ends at lr 0 with its last epoch, so its run cannot be extended: fine-tune "
            "from it in a new run (init=<its model folder>) instead"
        )
    if "collapse" in progress:
        raise ConfigError(
            f"--epochs: the run ended at epoch {progress['collapse']['epoch']} on catastrophic overfitting; extending "
            "it would train the collapsed network on: start a new run (another recipe or seed)"
        )
    if how == "stretch":
        progress["milestones"] = milestone_epochs(cfg.lr_milestones, epochs)
    else:
        progress["milestones"] = [m for m in progress["milestones"] if m < progress["epochs"]]
    progress["extensions"] = progress.get("extensions", []) + [
        {"after_epoch": progress["epoch"], "from": progress["epochs"], "to": epochs, "lr": how}
    ]
    progress["epochs"] = cfg.epochs = epochs


def save_checkpoint(accelerator: Accelerator, out: Path, progress: dict) -> None:
    """Accelerate state + progress, swapped in so that a kill at any moment leaves one whole checkpoint."""
    tmp, final = out / "checkpoint.tmp", out / "checkpoint"
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process has written its part (its RNG state) before the swap
    if accelerator.is_main_process:
        (tmp / "progress.json").write_text(json.dumps(progress))
        swap(tmp, final)
    accelerator.wait_for_everyone()


def swap(new: Path, final: Path) -> None:
    """Replace `final` by `new`; a kill at any moment leaves `final` or `final.old` whole (resume reads either)."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)  # a leftover of an earlier kill
    if final.exists():
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def plan_message(seconds_per_epoch: float, done: int, total: int, minutes: float | None, elapsed: float = 0.0) -> str:
    """How many more epochs this call fits at the measured speed after the `elapsed` seconds it has run (the epoch
    the stop rule of `time_limit_reached` stops after), and how many calls the plan still needs."""
    if not minutes:
        minutes_left = (total - done) * seconds_per_epoch / 60
        return f"{seconds_per_epoch:.1f} s per epoch: epochs {done + 1}-{total} take about {minutes_left:.1f} min"
    more = min(total - done, max(0, math.floor((minutes * 60 - elapsed) / seconds_per_epoch)))
    per_call = max(1, math.floor(minutes * 60 / seconds_per_epoch))
    calls = 1 + math.ceil((total - done - more) / per_call)
    return (
        f"{seconds_per_epoch:.1f} s per epoch: this call's {minutes:g} min fit about {more} more epoch"
        f"{'' if more == 1 else 's'} (to epoch {done + more} of {total}); the plan needs about {calls} call(s) of "
        f"{minutes:g} min in all"
    )


def plan_epoch(cfg: TrainConfig, epochs: int) -> int:
    """The epoch of a new run whose time the plan is made from: the first, or with torch.compile the second (the
    first one's time includes compilation)."""
    return 2 if cfg.compile != "none" and epochs > 1 else 1


def plan_from_epoch(
    cfg: TrainConfig, progress: dict, epoch: int, seconds: float, elapsed: float, accelerator: Accelerator
) -> None:
    """After the `plan_epoch` of a new run, which took `seconds` (all epochs so far `elapsed`): fit the plan to
    `cfg.time_budget_min` at that speed (the epochs done and as many more as the rest of the budget fits, at most
    cfg.epochs; the main process's count on every process), or say how long the rest of the plan takes."""
    if not cfg.time_budget_min:
        if epoch < progress["epochs"]:
            accelerator.print(plan_message(seconds, epoch, progress["epochs"], cfg.stop_after_min, elapsed))
        return
    more = math.floor((cfg.time_budget_min * 60 - elapsed) / seconds)
    planned = max(epoch, min(cfg.epochs, epoch + more))
    progress["epochs"] = int(broadcast(torch.tensor(planned, device=accelerator.device), from_process=0))
    progress["milestones"] = milestone_epochs(cfg.lr_milestones, progress["epochs"])
    accelerator.print(f"time budget {cfg.time_budget_min} min: {progress['epochs']} epochs of {seconds:.0f} s")


def note_best(progress: dict, epoch: int, val_clean: float, val_pgd: float) -> bool:
    """Record the epoch as the best if its validation PGD accuracy is; whether it was."""
    if val_pgd <= progress["best_val_pgd"]:
        return False
    progress.update(best_val_pgd=val_pgd, best_epoch=epoch, best_val_clean=val_clean)
    return True


def end_if_collapsed(
    cfg: TrainConfig, progress: dict, val_clean: float, val_pgd: float, n_val: int, accelerator: Accelerator
) -> None:
    """Catastrophic overfitting, the failure of single-step adversarial training: within an epoch the PGD accuracy
    falls to near 0 while the clean accuracy holds (and the training attack's accuracy climbs). It is this epoch's
    when, on the `n_val` validation images, the PGD accuracy is below `cfg.collapse_fraction` of the best so far (a
    best of at least COLLAPSE_FLOOR) by more than 3 standard errors of the best (not a small slice's noise), and so
    is the share of the clean-correct images that withstand PGD (a fall of both clean and PGD accuracy is
    instability, not this). The plan then ends at this epoch, so the run goes on to the final test of its best
    weights, and progress says so under `collapse` (a resume finds the run finished). One line says it."""
    best, fraction = progress["best_val_pgd"], cfg.collapse_fraction
    if not fraction or best < COLLAPSE_FLOOR or val_pgd >= fraction * best:
        return
    if best - val_pgd <= 3 * math.sqrt(best * (1 - best) / n_val):
        return
    best_clean = progress.get("best_val_clean")
    if best_clean and val_clean and val_pgd / val_clean >= fraction * best / best_clean:
        return
    epoch = progress["epoch"]
    progress["collapse"] = {"epoch": epoch, "val_pgd_acc": val_pgd, "best_val_pgd_acc": best}
    progress["epochs"] = epoch
    accelerator.print(
        f"catastrophic overfitting at epoch {epoch}: validation PGD accuracy {val_pgd:.1%} fell below "
        f"{fraction:g} of its best ({best:.1%}, epoch {progress['best_epoch']}) while the clean accuracy held "
        f"({val_clean:.1%}); the run ends here and keeps its best weights"
    )


class TimeLimit(enum.Enum):
    """A limit on a run's time that another epoch would overrun."""

    CALL = "this call"  # stop_after_min: the run stops, checkpointed, and a later call resumes it
    BUDGET = "the time budget"  # time_budget_min: the run ends here, and is evaluated


BUDGET_OVERRUN = 1.1  # an epoch may overrun time_budget_min by 10 % rather than be dropped


def time_limit_reached(
    cfg: TrainConfig, elapsed: float, seconds_per_epoch: float, accelerator: Accelerator
) -> TimeLimit | None:
    """The limit another epoch of `seconds_per_epoch` would overrun after `elapsed` seconds (a call's before a
    budget's), else None; decided on the main process for all."""
    budget_over = bool(cfg.time_budget_min) and elapsed + seconds_per_epoch > cfg.time_budget_min * 60 * BUDGET_OVERRUN
    call_over = bool(cfg.stop_after_min) and elapsed + seconds_per_epoch > cfg.stop_after_min * 60
    over = broadcast(torch.tensor([budget_over, call_over], device=accelerator.device), from_process=0).tolist()
    return TimeLimit.CALL if over[1] else TimeLimit.BUDGET if over[0] else None
