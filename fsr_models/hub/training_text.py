"""How a model was trained, as a card's Markdown: the method, the schedule, the attack, the start of a fine-tuned
model and the command that repeats the run."""

from __future__ import annotations

from collections import Counter

from fsr_models.evaluation.report import eps_text
from fsr_models.facts.datasets import DATASETS
from fsr_models.facts.paper import PAPER_EPOCHS
from fsr_models.hub.naming import DEFENSE_TEXT, network_name, placement
from fsr_models.hub.records import Record
from fsr_models.training.config import milestone_epochs, scaled_lr

METHOD_NAMES = {"at": "PGD adversarial training (AT, Madry et al.)", "trades": "TRADES", "mart": "MART"}
METHOD_NAMES["natural"] = "natural (non-adversarial) training"


def schedule_text(record: Record) -> str:
    """'32 epochs (3,040 SGD steps of batch 512), no warm-up, lr x0.1 after epoch 24, then x0.1 after epoch 29'."""
    train, run, metrics = record.train, record.run, record.metrics
    steps = f" ({run['sgd_steps']:,} SGD steps of batch {run['batch_size']})" if run["sgd_steps"] else ""
    warmup = train.get("warmup_epochs", 0)
    warmup = f"a linear learning-rate warm-up over {warmup:g} epochs" if warmup else "no warm-up"
    if metrics.get("extensions"):
        drops = f"at {', '.join(f'{100 * f:g}%' for f in train['lr_milestones'])} of the planned epochs; extended "
        drops += ", ".join(
            f"after epoch {e['after_epoch']} from {e['from']} to {e['to']} epochs (lr: {e['lr']})"
            for e in metrics["extensions"]
        )
        return f"{run['epochs']} epochs{steps}, {warmup}, lr x{train['lr_gamma']:g} {drops}"
    collapse = metrics.get("collapse")
    stopped = (
        f" (stopped on catastrophic overfitting after epoch {collapse['epoch']} of {train['epochs']}: validation "
        f"PGD accuracy fell to {100 * collapse['val_pgd_acc']:.1f}% from {100 * collapse['best_val_pgd_acc']:.1f}%)"
        if collapse
        else ""
    )
    if train.get("lr_schedule") == "cyclic":
        peak = scaled_lr(train["lr_per_128"], train["batch_size"])
        return (
            f"{run['epochs']} epochs{steps}{stopped}, a cyclic learning rate from 0 up to {peak:g} at half of the "
            f"{train['epochs']} planned epochs and down to 0 at their end"
        )
    planned = train["epochs"] if collapse else run["epochs"]
    after = Counter(m for m in milestone_epochs(train["lr_milestones"], planned) if m < run["epochs"])
    drops = ", then ".join(f"x{train['lr_gamma'] ** k:g} after epoch {m}" for m, k in sorted(after.items()))
    lr = drops or "constant (its drops fall after the last epoch)"
    return f"{run['epochs']} epochs{steps}{stopped}, {warmup}, lr {lr}"


def training_attack(train: dict) -> str:
    """The attack that formed the training batches, in words."""
    if train.get("attack") == "nfgsm":
        return (
            f"N-FGSM (de Jorge et al. 2022): uniform noise of {train['attack_noise']:g} x eps, one signed-gradient "
            f"step of {eps_text(train['attack_step_size'])}, no projection back to the eps {eps_text(train['eps'])} "
            "ball"
        )
    start = "a" if train["random_start"] else "no"
    return (
        f"PGD-{train['attack_steps']}, eps {eps_text(train['eps'])}, step {eps_text(train['attack_step_size'])}, "
        f"{start} random start"
    )


def start_lines(record: Record) -> list[str]:
    """For a fine-tuned model: the model it started from, and that model's final test beside this one's."""
    start = record.metrics.get("init")
    if not start:
        return []
    line = f"- **Fine-tuned from `{start['model']}`**, not trained from scratch"
    test = start.get("test")
    if test:
        mine = record.metrics["test"]
        line += f"; its final test: {figures_text(test)}; this model's: {figures_text(mine)}"
    return [line]


def figures_text(report: dict) -> str:
    """'natural 75.37, pgd20 47.22 (10,000 CIFAR-10 test images)'."""
    accuracy = ", ".join(
        f"{name} {100 * value:.2f}" for name, value in report["accuracy"].items() if name != "ensemble"
    )
    return f"{accuracy} ({report['images']:,} test images)"


def summary_line(record: Record) -> str:
    """One sentence: the network, with or without FSR, the method, the images and the schedule."""
    train, run = record.train, record.run
    where = placement(record.config)
    if not train:
        return f"{network_name(record.config)} {where}; no training config was recorded with these weights."
    method = METHOD_NAMES.get(train["method"], train["method"])
    method += f" (beta {train['beta']:g})" if train["method"] in ("trades", "mart") else ""
    budget = f", in a {train['time_budget_min']:g}-minute budget" if train.get("time_budget_min") else ""
    return (
        f"{network_name(record.config)} {where}, {method} on {run['train_images']:,} "
        f"{DATASETS[run['dataset']].name} training images: {schedule_text(record)}{budget}."
    )


def training_lines(record: Record) -> list[str]:
    train, run = record.train, record.run
    if not train:
        return ["No training config was recorded with these weights.", ""]
    lines = []
    if run["epochs"] < PAPER_EPOCHS:
        lines += [
            f"**Short schedule: {run['epochs']} epochs, not the paper's {PAPER_EPOCHS}-epoch recipe.** Expect "
            "lower accuracy than the paper reports.",
            "",
        ]
    sample = " in the shipped sample" if str(train.get("data_dir")) == "sample" else ""
    subset = f" (of {run['available']:,}{sample})" if run["subset"] else ""
    defense = DEFENSE_TEXT.get(record.config.get("defense"))
    fsr = f" + FSR's (Eq. 5: lambda_sep {train['lambda_sep']:g}, lambda_rec {train['lambda_rec']:g})"
    again = f" epochs={run['epochs']} time_budget_min=null" if train.get("time_budget_min") else ""
    return lines + [
        f"- {summary_line(record)} Best epoch {record.metrics.get('best_epoch', '?')}.",
        f"- Data: {run['train_images']:,} training images{subset}; {run['val_images']:,} more held out for "
        "validation (the saved weights are those of the best epoch by PGD accuracy on them); augmentation "
        f"{'pad-4 crop + flip' if train['augment'] else 'none'}",
        *([f"- Losses: the method's{fsr}"] if record.config.get("fsr_stages") else []),
        *(
            [
                f"- Losses: the method's cross-entropy + {train['defense_beta']:g} x the mean cross-entropy of "
                f"{defense.short}'s auxiliary heads (its authors' joint loss), which the training attack "
                "maximises too"
            ]
            if defense and defense.heads
            else []
        ),
        *([] if train["method"] == "natural" else [f"- Attack during training: {training_attack(train)}"]),
        *start_lines(record),
        f"- Optimiser: SGD lr {scaled_lr(train['lr_per_128'], train['batch_size']):g} ({train['lr_per_128']:g} per "
        f"128 images; momentum {train['momentum']:g}, weight decay {train['weight_decay']:g}), {train['precision']}"
        + (f"; {record.metrics['train_seconds']:.0f} s of training" if "train_seconds" in record.metrics else ""),
        "",
        "The full config is `train_config.yaml` in this repository; with the fsr-zoo code, `python training/train.py "
        f"--config train_config.yaml --set data_dir=<{DATASETS[run['dataset']].name} folder> output_dir=<new "
        f"folder>{again}` repeats the run.",
        "",
    ]
