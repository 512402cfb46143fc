"""Adversarial training (AT, TRADES, MART, natural) of the zoo's networks, with or without FSR, with Accelerate.

    python training/train.py --config training/configs/resnet18_fsr_at_cifar10.yaml [--set key=value ...]
    accelerate launch --multi_gpu --num_processes 4 training/train.py --config ...      # several GPUs
    python training/train.py --config ... --resume                                     # continue a killed run

One YAML file per paper setting (training/configs/), overridden by `--set key=value` (YAML values). FSR networks
add the FSR losses (Eq. 5) to the method's loss, all on the adversarial batch. Attacks run on the unwrapped model in
eval mode with input gradients from `torch.autograd.grad`, so nothing leaks into the update and DDP sees one
forward/backward per step. The output folder holds:
  checkpoint/       Accelerate state after the last finished epoch (model, optimiser, scheduler, RNG, progress)
  best/             the weights with the best PGD accuracy on the held-out validation slice (Hub layout)
  model/            best/ plus the final test metrics: what `fsr_models.hub.load_model` and the Hub publish
  metrics.jsonl     one line per epoch; TensorBoard logs under tensorboard/
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path

import timm
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import broadcast, set_seed
from tqdm.auto import tqdm

import fsr_models
from fsr_models.attacks import pgd
from fsr_models.datasets import load_dataset, to_float
from fsr_models.evaluate import correct
from fsr_models.hub import load_model, save_folder
from fsr_models.losses import METHODS, classification_loss, trades_kl


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a run; the YAML files name a subset, the rest keep these (the paper's) defaults."""

    model: str = "resnet18_fsr"  # a registered network (ignored when `init` is set)
    model_args: dict = dataclasses.field(default_factory=dict)  # extra timm.create_model arguments
    init: str | None = None  # fine-tune from a zoo model: registered tag, hf-hub:<id> or a folder
    dataset: str = "cifar10"  # cifar10, cifar100, svhn, tiny_imagenet
    data_dir: str | None = None  # default $FSR_DATA_DIR
    train_limit: int | None = None  # use only the first N training images (quick runs)
    val_size: int = 1000  # held out from the end of the training images, for the best checkpoint
    test_size: int = 10000  # test images of the final evaluation
    method: str = "at"  # natural, at, trades, mart
    beta: float = 6.0  # TRADES / MART
    lambda_sep: float = 1.0
    lambda_rec: float = 1.0
    epochs: int = 100
    time_budget_min: float | None = None  # fit the epochs into this many minutes (measured on epoch 1)
    batch_size: int = 128  # global, over all processes
    lr: float = 0.1  # per 128 images: scaled linearly with batch_size
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: list = dataclasses.field(default_factory=lambda: [0.75, 0.9])  # fractions of the epochs
    lr_gamma: float = 0.1
    eps: float | str = "8/255"
    attack_step: float | str = "2/255"
    attack_steps: int = 10
    random_start: bool = True
    val_attack_steps: int = 10  # PGD steps (training step size, random start) for the validation slice
    eval_attack_steps: int = 20  # final test PGD (paper protocol: step eps/10, no random start)
    augment: bool = True  # pad-4 random crop + horizontal flip (the paper: CIFAR yes, SVHN no)
    shuffle: bool = True
    seed: int = 0
    precision: str = "fp32"  # "fp32" or "bf16" (autocast); fp16 does not scale the input gradients of attacks
    channels_last: bool = False
    shard_mb: int | None = None  # write the final weights in safetensors shards of at most this many MiB
    log_every: int = 0  # print a line every N steps (0: progress bar only)
    output_dir: str = "runs/{model}_{method}_{dataset}"

    def __post_init__(self):
        self.eps, self.attack_step = float(Fraction(str(self.eps))), float(Fraction(str(self.attack_step)))
        for field in dataclasses.fields(self):  # YAML reads 1e-3 as a string and 1e2 as a float: check each value
            value, kind = getattr(self, field.name), field.type
            if value is None and "None" in kind:
                continue
            if kind.startswith("float"):
                try:
                    setattr(self, field.name, float(value))
                except (TypeError, ValueError):
                    raise ValueError(f"{field.name} must be a number, got {value!r}") from None
            elif kind.startswith("int") and not (isinstance(value, int) and not isinstance(value, bool)):
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    number = math.nan
                if isinstance(value, bool) or not number.is_integer():
                    raise ValueError(f"{field.name} must be a whole number, got {value!r}")
                setattr(self, field.name, int(number))
            elif kind == "bool" and not isinstance(value, bool):
                raise ValueError(f"{field.name} must be true or false, got {value!r}")
        if not all(isinstance(f, (int, float)) and 0 < f <= 1 for f in self.lr_milestones):
            raise ValueError(f"lr_milestones are fractions of the epochs in (0, 1], got {self.lr_milestones}")
        if self.val_size < 1 or self.test_size < 1:
            raise ValueError("val_size and test_size must be at least 1 (the best checkpoint and the final test need them)")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        self.output_dir = self.output_dir.format(model=Path(self.init or self.model).name, method=self.method,
                                                 dataset=self.dataset)  # fmt: skip


def load_config(path: str | None, overrides: list[str]) -> TrainConfig:
    values = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes key=value, got {item!r}")
        values[key] = yaml.safe_load(value)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} in {path or '--set'}; valid keys: {sorted(known)}")
    return TrainConfig(**values)


def augment(x: torch.Tensor) -> torch.Tensor:
    """Pad 4 (zeros) + random 32x32 crop + horizontal flip, per image, on whatever device x lives."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (2, n, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(n, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).expand(n, h, w)
    flip = torch.rand(n, 1, 1, device=x.device) < 0.5
    cols = torch.where(flip, 2 * dx + w - 1 - cols, cols)
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def shard_batches(n: int, batch_size: int, accelerator: Accelerator, generator: torch.Generator | None):
    """This process's part of each global batch: disjoint across processes, the same batches for any count."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n - batch_size + 1, batch_size):
        yield order[start : start + batch_size][accelerator.process_index :: accelerator.num_processes]


def evaluate(accelerator, net, images, labels, cfg: TrainConfig, steps, step_size, random_start):
    """Clean and PGD accuracy on all images, split over the processes; the model in eval mode."""
    net.eval()
    counts = torch.zeros(3, device=accelerator.device)
    batches = list(shard_batches(len(images), cfg.batch_size, accelerator, None))
    rest = len(images) % cfg.batch_size  # the tail that does not fill a global batch: the main process takes it
    if rest and accelerator.is_main_process:
        batches.append(torch.arange(len(images) - rest, len(images)))
    for idx in batches:
        x, y = to_float(images[idx]), labels[idx]
        x_adv = pgd(net, x, y, cfg.eps, step_size, steps, random_start)
        n = torch.tensor(len(y)).to(y.device)
        counts += torch.stack([correct(net, x, y).sum(), correct(net, x_adv, y).sum(), n])
    clean, adv, n = accelerator.reduce(counts, "sum").tolist()
    return clean / n, adv / n


def build_model(cfg: TrainConfig, num_classes: int, label_names) -> torch.nn.Module:
    if cfg.init:  # fine-tuning: the source's architecture, a new head when the classes differ
        model = load_model(cfg.init, num_classes=num_classes, **cfg.model_args)
    else:
        tagged = f"{cfg.model}.{cfg.method}_{cfg.dataset}"
        name = tagged if tagged in timm.list_models(cfg.model, include_tags=True) else cfg.model
        model = timm.create_model(name, num_classes=num_classes, **cfg.model_args)
    model.pretrained_cfg = {**model.pretrained_cfg, "num_classes": num_classes, "tag": f"{cfg.method}_{cfg.dataset}",
                            "label_names": list(label_names) if label_names else None}  # fmt: skip
    return model


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of a setting (training/configs/)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config keys (YAML values)")
    parser.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoint")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU exists")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.set)
    out = Path(cfg.output_dir)
    mixed_precision = "no" if cfg.precision == "fp32" else cfg.precision
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=mixed_precision, log_with="tensorboard", project_dir=str(out))
    device, main_process = accelerator.device, accelerator.is_main_process
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed batch shapes: cuDNN times and picks kernels
    checkpoint = out / "checkpoint"
    if not checkpoint.exists() and (out / "checkpoint.old").exists():  # killed between the two renames
        checkpoint = out / "checkpoint.old"
    if args.resume and not checkpoint.exists():
        raise FileNotFoundError(f"--resume: no checkpoint in {out}; start without --resume or fix output_dir")
    if not args.resume and (out / "config.yaml").exists():
        raise FileExistsError(f"{out} already holds a run: pass --resume to continue it, or choose another output_dir")
    if args.resume:  # a resumed run is the same run: its settings may not change
        saved = yaml.safe_load((out / "config.yaml").read_text())
        changed = {k: (saved.get(k), v) for k, v in dataclasses.asdict(cfg).items() if saved.get(k) != v}
        if changed:
            raise ValueError(f"--resume with settings that differ from {out / 'config.yaml'} (saved, given): {changed}."
                             " Resume with the run's own settings, or start a new run in another output_dir.")
    if cfg.batch_size % accelerator.num_processes:
        raise ValueError(f"batch_size {cfg.batch_size} does not split over {accelerator.num_processes} processes")
    set_seed(cfg.seed, device_specific=True)  # each process its own augmentation and noise draws

    # Data: uint8 tensors on the device (a CIFAR-sized set fits any GPU), augmented there per batch.
    images, labels, label_names = load_dataset(cfg.dataset, "train", cfg.data_dir, cfg.train_limit)
    if cfg.val_size >= len(images):
        raise ValueError(f"val_size {cfg.val_size} leaves no training images out of {len(images)}")
    n_train = len(images) - cfg.val_size
    if n_train < cfg.batch_size:
        raise ValueError(f"{n_train} training images make no batch of {cfg.batch_size}: lower batch_size or val_size")
    train_x, train_y = images[:n_train].to(device), labels[:n_train].to(device)
    val_x, val_y = images[n_train:].to(device), labels[n_train:].to(device)
    num_classes = len(label_names) if label_names else int(labels.max()) + 1

    model = build_model(cfg, num_classes, label_names)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    has_fsr = bool(model.fsr_modules())
    fsr_loss = fsr_models.FSRLoss.for_model(model, cfg.lambda_sep, cfg.lambda_rec) if has_fsr else None
    params = list(model.parameters()) + (list(fsr_loss.parameters()) if has_fsr else [])
    lr = cfg.lr * cfg.batch_size / 128
    optimizer = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # Not prepared: a prepared scheduler steps once per process per call; this one steps once per epoch.
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, [round(f * cfg.epochs) for f in cfg.lr_milestones], cfg.lr_gamma
    )
    if has_fsr:
        model, fsr_loss, optimizer = accelerator.prepare(model, fsr_loss, optimizer)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    net = accelerator.unwrap_model(model)  # attacks and evaluation: no DDP hooks, no gradient sync

    progress = {"epoch": 0, "epochs": cfg.epochs, "best_val_pgd": -1.0, "best_epoch": 0}
    if args.resume:
        accelerator.load_state(str(checkpoint))
        progress = json.loads((checkpoint / "progress.json").read_text())
        scheduler.milestones = type(scheduler.milestones)(round(f * progress["epochs"]) for f in cfg.lr_milestones)
        accelerator.print(f"resumed {checkpoint} after epoch {progress['epoch']} of {progress['epochs']}")
    elif main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    accelerator.init_trackers("tensorboard", config={k: v for k, v in dataclasses.asdict(cfg).items()
                                                     if isinstance(v, (int, float, str, bool))})  # fmt: skip
    accelerator.print(f"{type(net).__name__} {cfg.model if not cfg.init else cfg.init}: {cfg.method}"
                      f"{' + FSR' if has_fsr else ''} on {cfg.dataset}, {n_train} train / {len(val_x)} val images, "
                      f"{accelerator.num_processes} process(es) on {device}, lr {lr:g}")  # fmt: skip

    def log(metrics: dict) -> None:
        if main_process:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
        accelerator.log(metrics, step=metrics["epoch"])
        accelerator.print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))

    if not args.resume:  # the starting point, for comparison
        val_clean, val_pgd = evaluate(accelerator, net, val_x, val_y, cfg, cfg.val_attack_steps, cfg.attack_step, True)
        log({"epoch": 0, "val_clean_acc": val_clean, "val_pgd_acc": val_pgd})

    if args.resume and progress["epoch"] >= progress["epochs"]:
        accelerator.print(f"{out} finished all {progress['epochs']} epochs already: nothing to resume")
        accelerator.end_training()
        return 0
    started = time.perf_counter()
    epoch = progress["epoch"]
    while epoch < progress["epochs"]:
        epoch_start, epoch_lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch) if cfg.shuffle else None
        batches = list(shard_batches(n_train, cfg.batch_size, accelerator, generator))
        totals = torch.zeros(5, device=device)  # loss, classification loss, FSR loss, correct (adv), images
        for step, idx in enumerate(tqdm(batches, desc=f"epoch {epoch + 1}", disable=not main_process, leave=False)):
            x, y = to_float(train_x[idx]), train_y[idx]
            if cfg.augment:
                x = augment(x)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)

            # Inner maximisation on the unwrapped model in eval mode (BN statistics, deterministic FSR mask).
            net.eval()
            logits_nat = None
            if cfg.method == "natural":
                x_adv = x
            elif cfg.method == "trades":  # TRADES and MART start from x + 0.001 N(0, 1), as their code does
                with torch.no_grad():
                    target_nat = net(x)
                x_adv = pgd(net, x, target_nat, cfg.eps, cfg.attack_step, cfg.attack_steps,
                            loss_fn=trades_kl, start=x + 0.001 * torch.randn_like(x))  # fmt: skip
            elif cfg.method == "mart":
                x_adv = pgd(net, x, y, cfg.eps, cfg.attack_step, cfg.attack_steps, start=x + 0.001 * torch.randn_like(x))
            else:
                x_adv = pgd(net, x, y, cfg.eps, cfg.attack_step, cfg.attack_steps, cfg.random_start)

            # Outer minimisation through the (DDP-)wrapped model in train mode.
            model.train()
            if cfg.method in ("trades", "mart"):  # natural batch first, as their code does (BN statistics)
                logits_nat = model(x)
            out_adv = model(x_adv, return_fsr=has_fsr)
            logits_adv = out_adv.logits if has_fsr else out_adv
            loss_cls = classification_loss(cfg.method, logits_adv, y, logits_nat, cfg.beta)
            loss_fsr = fsr_loss(out_adv, y) if has_fsr else torch.zeros((), device=device)
            loss = loss_cls + loss_fsr
            if not torch.isfinite(accelerator.gather(loss.detach())).all():
                kept = (f"{checkpoint} still holds the last good epoch ({progress['epoch']}) and best/ its best "
                        "weights" if progress["epoch"] else "no epoch had finished, so nothing was saved")
                accelerator.print(
                    f"\nnon-finite loss at epoch {epoch + 1} step {step + 1} (classification {loss_cls.item():g}, "
                    f"FSR {loss_fsr.item():g}): stopping. {kept}. Lower lr (or check the data) and start a new run."
                )
                accelerator.end_training()
                return 3
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            n_correct = (logits_adv.argmax(1) == y).sum()
            totals += torch.stack([loss.detach(), loss_cls.detach(), loss_fsr.detach(), n_correct, torch.tensor(len(y))
                                   .to(device)]).float()  # fmt: skip
            if cfg.log_every and (step + 1) % cfg.log_every == 0:
                accelerator.print(f"epoch {epoch + 1} step {step + 1}/{len(batches)} loss {loss.item():.4f}", flush=True)
        scheduler.step()
        epoch += 1
        # DDP syncs BN running statistics at the start of each forward, from rank 0: sync the last step's too, so
        # that every process evaluates and checkpoints the same network.
        for buffer in net.buffers():
            buffer.copy_(broadcast(buffer, from_process=0))

        totals = accelerator.reduce(totals, "sum")
        steps = max(len(batches) * accelerator.num_processes, 1)
        val_clean, val_pgd = evaluate(accelerator, net, val_x, val_y, cfg, cfg.val_attack_steps, cfg.attack_step, True)
        seconds = time.perf_counter() - epoch_start
        metrics = {
            "epoch": epoch, "lr": epoch_lr,
            "loss": totals[0].item() / steps, "loss_cls": totals[1].item() / steps, "loss_fsr": totals[2].item() / steps,
            "train_adv_acc": totals[3].item() / max(totals[4].item(), 1), "val_clean_acc": val_clean,
            "val_pgd_acc": val_pgd, "images_per_s": totals[4].item() / seconds, "seconds": seconds,
        }  # fmt: skip
        if cfg.time_budget_min and epoch == 1 and not args.resume:  # plan the schedule on the first epoch's time
            planned = max(1, min(cfg.epochs, math.floor(cfg.time_budget_min * 60 / seconds)))
            progress["epochs"] = int(broadcast(torch.tensor(planned, device=device), from_process=0))  # one plan
            scheduler.milestones = type(scheduler.milestones)(round(f * progress["epochs"]) for f in cfg.lr_milestones)
            accelerator.print(f"time budget {cfg.time_budget_min} min: {progress['epochs']} epochs of {seconds:.0f} s")
        log(metrics)
        progress["epoch"] = epoch
        if val_pgd > progress["best_val_pgd"]:
            progress["best_val_pgd"] = val_pgd
            progress["best_epoch"] = epoch
            if main_process:
                shutil.rmtree(out / "best.tmp", ignore_errors=True)
                save_folder(net, out / "best.tmp", lambda_sep=cfg.lambda_sep, lambda_rec=cfg.lambda_rec)
                swap(out / "best.tmp", out / "best")
        save_checkpoint(accelerator, out, progress)
        over = bool(cfg.time_budget_min) and time.perf_counter() - started + seconds > cfg.time_budget_min * 66
        if bool(broadcast(torch.tensor(over, device=device), from_process=0)) and epoch < progress["epochs"]:
            accelerator.print(f"time budget spent after epoch {epoch} of {progress['epochs']}: stopping early")
            break

    # Every process reports its weights (they must agree), in one write: print() writes text and newline apart.
    digest = sum(p.double().sum().item() * (i + 1) for i, p in enumerate(net.state_dict().values()))
    sys.stdout.write(f"[rank {accelerator.process_index}] final weights checksum {digest!r}\n")
    sys.stdout.flush()

    # Final evaluation of the best weights on the test set, paper protocol (PGD-20, step eps/10, no random start).
    best = load_model(out / "best").to(device)
    test_x, test_y, _ = load_dataset(cfg.dataset, "test", cfg.data_dir, cfg.test_size)
    test_clean, test_pgd = evaluate(accelerator, best, test_x.to(device), test_y.to(device), cfg, cfg.eval_attack_steps,
                                    cfg.eps / 10, False)  # fmt: skip
    results = {"test_images": len(test_x), "natural_acc": test_clean, f"pgd{cfg.eval_attack_steps}_acc": test_pgd,
               "best_val_pgd_acc": progress["best_val_pgd"], "best_epoch": progress["best_epoch"], "epochs": epoch,
               "train_seconds": time.perf_counter() - started, "eps": cfg.eps,
               "attack": f"PGD-{cfg.eval_attack_steps}, step eps/10, no random start"}  # fmt: skip
    if main_process:
        shard = cfg.shard_mb * 2**20 if cfg.shard_mb else "5GB"
        save_folder(best, out / "model", max_shard_size=shard, lambda_sep=cfg.lambda_sep, lambda_rec=cfg.lambda_rec)
        results["train_config"] = dataclasses.asdict(cfg)
        (out / "model" / "metrics.json").write_text(json.dumps(results, indent=2))
    accelerator.print(json.dumps({k: v for k, v in results.items() if k != "train_config"}))
    accelerator.print(f"Hub-ready folder: {out / 'model'} (fsr_models.hub.load_model, timm 'local-dir:', or "
                      "transformers AutoModelForImageClassification.from_pretrained after `import fsr_models`)")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
