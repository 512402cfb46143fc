"""Adversarial training (AT, TRADES, MART, natural) of the zoo's networks, with or without FSR, with Accelerate.

    python training/train.py --config training/configs/resnet18_fsr_at_cifar10.yaml [--set key=value ...]
    accelerate launch --multi_gpu --num_processes 4 training/train.py --config ...      # several GPUs
    python training/train.py --resume runs/<run>                                       # continue a killed run
    python training/train.py --resume runs/<run> --epochs 150 --lr-extension hold        # extend a finished one

One YAML file per paper setting (training/configs/), overridden by `--set key=value` (YAML values). FSR networks
add the FSR losses (Eq. 5) to the method's loss, all on the adversarial batch. Attacks run on the unwrapped model in
eval mode with input gradients from `torch.autograd.grad`, so nothing leaks into the update and DDP sees one
forward/backward per step. The output folder holds:
  checkpoint/       Accelerate state after the last finished epoch (model, optimiser, scheduler, RNG, progress)
  best/             the weights with the best PGD accuracy on the held-out validation slice (Hub layout)
  model/            best/ plus the final test metrics: what `fsr_models.hub.load_model` and the Hub publish
  metrics.jsonl     one line per epoch (FSR health figures included); TensorBoard logs under tensorboard/
best/ and model/ also hold the trained FSR auxiliary heads (fsr_heads.safetensors), which fine-tuning reloads.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path

import timm
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import broadcast, set_seed
from tqdm.auto import tqdm

import fsr_models
from fsr_models.attacks import pgd, pixel_fraction
from fsr_models.datasets import load_dataset, to_float
from fsr_models.evaluate import correct
from fsr_models.fsr import fsr_health, fsr_health_problems
from fsr_models.hub import FSR_HEADS_NAME, load_fsr_heads, load_model, save_folder
from fsr_models.losses import METHODS, classification_loss, trades_kl
from fsr_models.models._common import init_vgg

# torch.compile modes ("none": eager). "reduce-overhead" records CUDA graphs on a GPU, the fast path there.
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Settings that --resume may change: they do not change what the run computes.
RESUME_MAY_CHANGE = {"data_dir", "download", "log_every", "stop_after_min", "compile", "shard_mb", "output_dir"}


class ConfigError(ValueError):
    """A setting or command line that cannot run; the message says what to change (exit 2, no traceback)."""


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a run; the YAML files name a subset, the rest keep these (the paper's) defaults."""

    model: str = "resnet18_fsr"  # a registered network (ignored when `init` is set)
    model_args: dict = dataclasses.field(default_factory=dict)  # extra timm.create_model arguments
    init: str | None = None  # fine-tune from a zoo model: registered tag, hf-hub:<id> or a folder
    dataset: str = "cifar10"  # cifar10, cifar100, svhn, tiny_imagenet
    data_dir: str | None = None  # default $FSR_DATA_DIR
    download: bool = False  # let torchvision download the data set into data_dir when it is not there
    train_limit: int | None = None  # use only the first N training images (quick runs)
    val_size: int = 1000  # held out from the end of the training images, for the best checkpoint
    test_size: int = 10000  # test images of the final evaluation
    method: str = "at"  # natural, at, trades, mart
    beta: float = 6.0  # TRADES / MART
    lambda_sep: float = 1.0
    lambda_rec: float = 1.0
    epochs: int = 100
    time_budget_min: float | None = None  # fit the epochs into this many minutes (measured on epoch 1)
    stop_after_min: float | None = None  # stop this call (checkpointed) before its minutes run out; --resume goes on
    batch_size: int = 128  # global, over all processes
    lr: float = 0.1  # per 128 images: scaled linearly with batch_size
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: list = dataclasses.field(default_factory=lambda: [0.75, 0.9])  # fractions of the epochs
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear learning-rate warm-up from lr / steps to lr, counted in SGD steps
    weight_init: str = "authors"  # "authors" (each backbone's own) or "kaiming_fan_out" (VGG's init everywhere)
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
    compile: str = "none"  # one of COMPILE_MODES: torch.compile the attack and the training step
    shard_mb: int | None = None  # write the final weights in safetensors shards of at most this many MiB
    log_every: int = 0  # print a line every N steps (0: progress bar only)
    output_dir: str = "runs/{model}_{method}_{dataset}"

    def __post_init__(self):
        for name in ("eps", "attack_step"):
            try:
                setattr(self, name, pixel_fraction(str(getattr(self, name)), name))
            except ValueError as e:
                raise ConfigError(f"{name}: {e}") from None
        for field in dataclasses.fields(self):  # YAML reads 1e-3 as a string and 1e2 as a float: check each value
            value, kind = getattr(self, field.name), field.type
            if value is None and "None" in kind:
                continue
            if kind.startswith("float"):
                try:
                    setattr(self, field.name, float(value))
                except (TypeError, ValueError):
                    raise ConfigError(f"{field.name} must be a number, got {value!r}") from None
            elif kind.startswith("int") and not (isinstance(value, int) and not isinstance(value, bool)):
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    number = math.nan
                if isinstance(value, bool) or not number.is_integer():
                    raise ConfigError(f"{field.name} must be a whole number, got {value!r}")
                setattr(self, field.name, int(number))
            elif kind == "bool" and not isinstance(value, bool):
                raise ConfigError(f"{field.name} must be true or false, got {value!r}")
        if not all(isinstance(f, (int, float)) and 0 < f <= 1 for f in self.lr_milestones):
            raise ConfigError(f"lr_milestones are fractions of the epochs in (0, 1], got {self.lr_milestones}")
        if self.val_size < 1 or self.test_size < 1:
            raise ConfigError("val_size and test_size must be at least 1 (the best checkpoint and the final test need them)")
        for name in ("epochs", "batch_size", "attack_steps", "val_attack_steps", "eval_attack_steps"):
            if getattr(self, name) < (0 if "attack" in name else 1):
                raise ConfigError(f"{name} must be at least {0 if 'attack' in name else 1}, got {getattr(self, name)}")
        for name in ("lr", "warmup_epochs", "weight_decay", "momentum", "time_budget_min", "stop_after_min"):
            if (getattr(self, name) or 0) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"compile must be one of {COMPILE_MODES}, got {self.compile!r}")
        if self.weight_init not in ("authors", "kaiming_fan_out"):
            raise ConfigError(f"weight_init must be 'authors' or 'kaiming_fan_out', got {self.weight_init!r}")
        self.output_dir = self.output_dir.format(model=Path(self.init or self.model).name, method=self.method,
                                                 dataset=self.dataset)  # fmt: skip


def config_values(path: str | None, overrides: list[str]) -> dict:
    """The settings a YAML file and `--set key=value` items give, each key checked where it was written."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {}
    if path:
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read the config {path}: {e}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold key: value settings, got {type(values).__name__}")
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown} in {path}; valid keys: {sorted(known)}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        if key not in known:
            raise ConfigError(f"unknown config key {key!r} in --set {item}; valid keys: {sorted(known)}")
        values[key] = yaml.safe_load(value)
    return values


def load_config(path: str | None, overrides: list[str]) -> TrainConfig:
    return TrainConfig(**config_values(path, overrides))


def resumed_config(out: Path, path: str | None, overrides: list[str]) -> TrainConfig:
    """The settings saved in a run folder; a config file or --set may repeat them or change RESUME_MAY_CHANGE."""
    if not (out / "config.yaml").is_file():
        raise ConfigError(f"--resume: {out} holds no run (no config.yaml); start without --resume or fix the folder")
    saved_values = yaml.safe_load((out / "config.yaml").read_text())
    saved = dataclasses.asdict(TrainConfig(**saved_values))
    given = dataclasses.asdict(TrainConfig(**{**saved_values, **config_values(path, overrides)}))
    changed = {k: (saved.get(k), v) for k, v in given.items() if saved.get(k) != v and k not in RESUME_MAY_CHANGE}
    if changed:
        hint = " To train longer, use --epochs N with --lr-extension." if "epochs" in changed else ""
        raise ConfigError(f"--resume with settings that differ from {out / 'config.yaml'} (saved, given): {changed}. "
                          f"A resumed run keeps its settings: resume with --resume {out} alone.{hint}")  # fmt: skip
    return TrainConfig(**{**given, "output_dir": str(out)})


def lr_factor(step: int, steps_per_epoch: int, warmup_epochs: float, milestones: list[int], gamma: float) -> float:
    """The learning rate of SGD step `step` (0-based) over the base lr: a linear warm-up, then x gamma at each
    milestone epoch."""
    warmup_steps = warmup_epochs * steps_per_epoch
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return warm * gamma ** sum(step // steps_per_epoch >= m for m in milestones)


def compile_available(mode: str, device: torch.device, accelerator: Accelerator) -> bool:
    """Whether torch.compile works here; if not, one line says why and the run goes on eager (no C++ compiler for
    inductor's CPU backend, no Triton on a GPU, an unsupported Python)."""
    try:  # a tiny graph proves the toolchain before hours of training depend on it
        torch.compile(lambda t: t * 2 + 1, mode=mode)(torch.ones(2, device=device))
        return True
    except Exception as e:  # noqa: BLE001 - any failure of the toolchain means: run eager
        reason = (str(e).splitlines() or [""])[0][:200]
        accelerator.print(f"compile={mode} is not available here ({type(e).__name__}: {reason}); running eager")
        return False


def adversarial_loss(cfg: TrainConfig, attack_net, step_model, fsr_loss, x: torch.Tensor, y: torch.Tensor):
    """One step's losses: the inner maximisation on `attack_net` (the unwrapped network) in eval mode, then the
    method's loss (+ the FSR losses) of the adversarial batch through `step_model` (DDP-wrapped where there is
    DDP) in train mode. Returns (loss, classification loss, FSR loss, adversarial logits)."""
    attack_net.eval()  # BN statistics, deterministic FSR mask
    logits_nat = None
    if cfg.method == "natural":
        x_adv = x
    elif cfg.method == "trades":  # TRADES and MART start from x + 0.001 N(0, 1), as their code does
        with torch.no_grad():
            target_nat = attack_net(x)
        x_adv = pgd(attack_net, x, target_nat, cfg.eps, cfg.attack_step, cfg.attack_steps,
                    loss_fn=trades_kl, start=x + 0.001 * torch.randn_like(x))  # fmt: skip
    elif cfg.method == "mart":
        x_adv = pgd(attack_net, x, y, cfg.eps, cfg.attack_step, cfg.attack_steps, start=x + 0.001 * torch.randn_like(x))
    else:
        x_adv = pgd(attack_net, x, y, cfg.eps, cfg.attack_step, cfg.attack_steps, cfg.random_start)

    step_model.train()
    if cfg.method in ("trades", "mart"):  # natural batch first, as their code does (BN statistics)
        logits_nat = step_model(x)
    out_adv = step_model(x_adv, return_fsr=fsr_loss is not None)
    logits_adv = out_adv.logits if fsr_loss is not None else out_adv
    loss_cls = classification_loss(cfg.method, logits_adv, y, logits_nat, cfg.beta)
    loss_fsr = fsr_loss(out_adv, y) if fsr_loss is not None else torch.zeros((), device=y.device)
    return loss_cls + loss_fsr, loss_cls, loss_fsr, logits_adv


def health_line(health: dict) -> str:
    """The FSR health figures of one epoch, compactly: R's contribution, live units of S and R, the mask."""
    return " ".join(
        f"{name}: R {h.get('r_contribution', 0):.3g} live S {h.get('s_live_1', 0):.0%}/{h.get('s_live_2', 0):.0%} "
        f"R {h.get('r_live_1', 0):.0%}/{h.get('r_live_2', 0):.0%} mask {h.get('mask_mean', 0):.2f} "
        f"(>0.99 {h.get('mask_above_0.99', 0):.0%}, <0.01 {h.get('mask_below_0.01', 0):.0%})"
        for name, h in health.items()
    )


def plan_message(seconds_per_epoch: float, done: int, total: int, minutes: float | None) -> str:
    """How many epochs this call fits at the measured speed, and how many calls the plan still needs."""
    if not minutes:
        return f"{seconds_per_epoch:.1f} s per epoch: epochs {done + 1}-{total} take about {(total - done) * seconds_per_epoch / 60:.1f} min"
    fits = max(1, math.floor(minutes * 60 / seconds_per_epoch))
    calls = math.ceil((total - done) / fits)
    return (f"{seconds_per_epoch:.1f} s per epoch: this call's {minutes:g} min fit about {fits} epochs (to epoch "
            f"{min(total, done + fits)} of {total}); the plan needs about {calls} call(s) of {minutes:g} min in all")


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
        if not timm.is_model(name.split(".")[0]):
            raise ConfigError(f"model {cfg.model!r} is not a registered network; the zoo's are "
                              f"{[n for pair in fsr_models.ARCHITECTURES.values() for n in pair]}")  # fmt: skip
        model = timm.create_model(name, num_classes=num_classes, **cfg.model_args)
    model.pretrained_cfg = {**model.pretrained_cfg, "num_classes": num_classes, "tag": f"{cfg.method}_{cfg.dataset}",
                            "label_names": list(label_names) if label_names else None}  # fmt: skip
    return model


def milestone_epochs(cfg: TrainConfig, epochs: int) -> list[int]:
    return [round(f * epochs) for f in cfg.lr_milestones]


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
    parser.add_argument("--resume", nargs="?", const="", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR (default: the config's output_dir) with its saved settings")
    parser.add_argument("--epochs", type=int, metavar="N", help="with --resume: extend the run's plan to N epochs")
    parser.add_argument("--lr-extension", choices=("stretch", "hold"),
                        help="with --epochs: 'stretch' keeps the milestones at their fractions of the new total (the "
                             "lr may rise again), 'hold' runs the added epochs at the lr the plan ends with")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU exists")
    args = parser.parse_args(argv)
    try:
        return train(args)
    except (ConfigError, FileNotFoundError, FileExistsError) as e:  # the user's to fix: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def train(args: argparse.Namespace) -> int:
    resuming = args.resume is not None
    if (args.epochs is not None or args.lr_extension) and not resuming:
        raise ConfigError("--epochs and --lr-extension extend an existing run: use them with --resume RUN_DIR")
    if (args.epochs is None) != (args.lr_extension is None):
        raise ConfigError("extending a run takes both --epochs N and --lr-extension stretch|hold")
    if resuming:
        out = Path(args.resume or load_config(args.config, args.set).output_dir)
        cfg = resumed_config(out, args.config, args.set)
    else:
        cfg = load_config(args.config, args.set)
        out = Path(cfg.output_dir)
    checkpoint = out / "checkpoint"
    if not checkpoint.exists() and (out / "checkpoint.old").exists():  # killed between the two renames
        checkpoint = out / "checkpoint.old"
    if resuming and not checkpoint.exists():
        raise FileNotFoundError(f"--resume: no checkpoint in {out} (the run stopped before its first epoch ended); "
                                "start it again in a new output_dir")  # fmt: skip
    if not resuming and (out / "config.yaml").exists():
        raise FileExistsError(f"{out} already holds a run: pass --resume {out} to continue it, or choose another "
                              "output_dir")  # fmt: skip
    saved_progress = json.loads((checkpoint / "progress.json").read_text()) if resuming else None
    if args.epochs is not None and args.epochs <= saved_progress["epochs"]:
        raise ConfigError(f"--epochs {args.epochs}: {out} already plans {saved_progress['epochs']} epochs; give more")

    mixed_precision = "no" if cfg.precision == "fp32" else cfg.precision
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=mixed_precision, log_with="tensorboard", project_dir=str(out))
    device, main_process = accelerator.device, accelerator.is_main_process
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed batch shapes: cuDNN times and picks kernels
    if cfg.batch_size % accelerator.num_processes:
        raise ConfigError(f"batch_size {cfg.batch_size} does not split over {accelerator.num_processes} processes")
    set_seed(cfg.seed, device_specific=True)  # each process its own augmentation and noise draws

    # Data: uint8 tensors on the device (a CIFAR-sized set fits any GPU), augmented there per batch.
    images, labels, label_names = load_dataset(cfg.dataset, "train", cfg.data_dir, cfg.train_limit,
                                               download=cfg.download)  # fmt: skip
    if cfg.val_size >= len(images):
        raise ConfigError(f"val_size {cfg.val_size} leaves no training images out of {len(images)}")
    n_train = len(images) - cfg.val_size
    if n_train < cfg.batch_size:
        raise ConfigError(f"{n_train} training images make no batch of {cfg.batch_size}: lower batch_size or val_size")
    train_x, train_y = images[:n_train].to(device), labels[:n_train].to(device)
    val_x, val_y = images[n_train:].to(device), labels[n_train:].to(device)
    num_classes = len(label_names) if label_names else int(labels.max()) + 1
    steps_per_epoch = n_train // cfg.batch_size

    model = build_model(cfg, num_classes, label_names)
    has_fsr = bool(model.fsr_modules())
    fsr_loss = fsr_models.FSRLoss.for_model(model, cfg.lambda_sep, cfg.lambda_rec) if has_fsr else None
    if cfg.weight_init == "kaiming_fan_out" and not cfg.init:
        init_vgg(list(model.modules()) + (list(fsr_loss.modules()) if has_fsr else []))
    if cfg.init and has_fsr and not resuming:  # the trained heads, unless the checkpoint brings its own
        accelerator.print(load_fsr_heads(cfg.init, fsr_loss))
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = list(model.parameters()) + (list(fsr_loss.parameters()) if has_fsr else [])
    lr = cfg.lr * cfg.batch_size / 128
    optimizer = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    progress = saved_progress or {"epoch": 0, "epochs": cfg.epochs, "step": 0, "best_val_pgd": -1.0, "best_epoch": 0,
                                  "milestones": milestone_epochs(cfg, cfg.epochs)}  # fmt: skip
    progress.setdefault("step", progress["epoch"] * steps_per_epoch)  # checkpoints of older versions lack these
    progress.setdefault("milestones", milestone_epochs(cfg, progress["epochs"]))
    progress.setdefault("train_seconds", 0.0)  # summed over the calls of a plan in pieces
    # Per SGD step (warm-up), reading the milestones from `progress`, which a time budget or an extension moves.
    # Not prepared: Accelerate's prepared scheduler steps once per process per call.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(
        step, steps_per_epoch, cfg.warmup_epochs, progress["milestones"], cfg.lr_gamma))  # fmt: skip
    if has_fsr:
        model, fsr_loss, optimizer = accelerator.prepare(model, fsr_loss, optimizer)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    net = accelerator.unwrap_model(model)  # attacks and evaluation: no DDP hooks, no gradient sync
    heads = accelerator.unwrap_model(fsr_loss) if has_fsr else None
    attack_net, step_model = net, model
    if cfg.compile != "none" and compile_available(cfg.compile, device, accelerator):
        attack_net = torch.compile(net, mode=cfg.compile)  # the eval-mode attack's graphs
        step_model = attack_net if model is net else torch.compile(model, mode=cfg.compile)  # the train-mode step

    if resuming:
        accelerator.load_state(str(checkpoint))
        if args.epochs is not None:
            if args.lr_extension == "stretch":
                progress["milestones"] = milestone_epochs(cfg, args.epochs)
            else:  # hold: a milestone at the plan's end was never reached; the added epochs keep the final lr
                progress["milestones"] = [m for m in progress["milestones"] if m < progress["epochs"]]
            progress["extensions"] = progress.get("extensions", []) + [
                {"after_epoch": progress["epoch"], "from": progress["epochs"], "to": args.epochs, "lr": args.lr_extension}]
            progress["epochs"] = cfg.epochs = args.epochs
        accelerator.print(f"resumed {checkpoint} after epoch {progress['epoch']} of {progress['epochs']}")
    elif main_process:
        out.mkdir(parents=True, exist_ok=True)
    if main_process and (not resuming or args.epochs is not None):
        (out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    accelerator.init_trackers("tensorboard", config={k: v for k, v in dataclasses.asdict(cfg).items()
                                                     if isinstance(v, (int, float, str, bool))})  # fmt: skip
    accelerator.print(f"{type(net).__name__} {cfg.model if not cfg.init else cfg.init}: {cfg.method}"
                      f"{' + FSR' if has_fsr else ''} on {cfg.dataset}, {n_train} train / {len(val_x)} val images, "
                      f"{accelerator.num_processes} process(es) on {device}, lr {lr:g}"
                      f"{f', {cfg.warmup_epochs:g} warm-up epochs' if cfg.warmup_epochs else ''}")  # fmt: skip

    def log(metrics: dict) -> None:
        if main_process:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
        accelerator.log(metrics, step=metrics["epoch"])
        accelerator.print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                                   if "/" not in k))  # fmt: skip

    def health(x: torch.Tensor) -> dict:
        """FSR health figures of the network on the clean images x (main process), flat for the logs."""
        if not (has_fsr and main_process):
            return {}
        figures = fsr_health(net, to_float(x))
        accelerator.print(health_line(figures))
        for problem in fsr_health_problems(figures):
            accelerator.print(f"warning: {problem}")
        return {f"{name}/{k}": v for name, h in figures.items() for k, v in h.items()}

    if not resuming:  # the starting point, for comparison
        val_clean, val_pgd = evaluate(accelerator, net, val_x, val_y, cfg, cfg.val_attack_steps, cfg.attack_step, True)
        log({"epoch": 0, "step": 0, "val_clean_acc": val_clean, "val_pgd_acc": val_pgd, **health(val_x)})

    finished = progress["epoch"] >= progress["epochs"]
    if finished and (out / "model" / "metrics.json").is_file():
        accelerator.print(f"{out} finished all {progress['epochs']} epochs already: nothing to resume (extend it with "
                          "--epochs N --lr-extension stretch|hold)")  # fmt: skip
        accelerator.end_training()
        return 0
    if resuming and not finished and (out / "metrics.jsonl").is_file():
        seconds = [m["seconds"] for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "seconds" in m]
        if seconds:
            accelerator.print(plan_message(seconds[-1], progress["epoch"], progress["epochs"], cfg.stop_after_min))
    started = time.perf_counter()
    epoch, stopped = progress["epoch"], False
    while epoch < progress["epochs"]:
        epoch_start = time.perf_counter()
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch) if cfg.shuffle else None
        batches = list(shard_batches(n_train, cfg.batch_size, accelerator, generator))
        totals = torch.zeros(5, device=device)  # loss, classification loss, FSR loss, correct (adv), images
        for step, idx in enumerate(tqdm(batches, desc=f"epoch {epoch + 1}", disable=not main_process, leave=False)):
            x, y = to_float(train_x[idx]), train_y[idx]
            if cfg.augment:
                x = augment(x)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss, loss_cls, loss_fsr, logits_adv = adversarial_loss(cfg, attack_net, step_model, fsr_loss, x, y)
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
            step_lr = optimizer.param_groups[0]["lr"]  # this step's (the scheduler then sets the next one's)
            optimizer.step()
            scheduler.step()
            progress["step"] += 1
            n_correct = (logits_adv.argmax(1) == y).sum()
            totals += torch.stack([loss.detach(), loss_cls.detach(), loss_fsr.detach(), n_correct, torch.tensor(len(y))
                                   .to(device)]).float()  # fmt: skip
            if cfg.log_every and (step + 1) % cfg.log_every == 0:
                accelerator.print(f"epoch {epoch + 1} step {step + 1}/{len(batches)} loss {loss.item():.4f}", flush=True)
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
            "epoch": epoch, "step": progress["step"], "lr": step_lr,
            "loss": totals[0].item() / steps, "loss_cls": totals[1].item() / steps, "loss_fsr": totals[2].item() / steps,
            "train_adv_acc": totals[3].item() / max(totals[4].item(), 1), "val_clean_acc": val_clean,
            "val_pgd_acc": val_pgd, "images_per_s": totals[4].item() / seconds, "seconds": seconds,
        }  # fmt: skip
        if cfg.time_budget_min and epoch == 1 and not resuming:  # plan the schedule on the first epoch's time
            planned = max(1, min(cfg.epochs, math.floor(cfg.time_budget_min * 60 / seconds)))
            progress["epochs"] = int(broadcast(torch.tensor(planned, device=device), from_process=0))  # one plan
            progress["milestones"] = milestone_epochs(cfg, progress["epochs"])
            accelerator.print(f"time budget {cfg.time_budget_min} min: {progress['epochs']} epochs of {seconds:.0f} s")
        elif epoch == 1 and not resuming:
            accelerator.print(plan_message(seconds, 0, progress["epochs"], cfg.stop_after_min))
        log({**metrics, **health(val_x)})
        progress["epoch"] = epoch
        progress["train_seconds"] += seconds
        if val_pgd > progress["best_val_pgd"]:
            progress["best_val_pgd"] = val_pgd
            progress["best_epoch"] = epoch
            if main_process:
                shutil.rmtree(out / "best.tmp", ignore_errors=True)
                save_folder(net, out / "best.tmp", fsr_loss=heads, lambda_sep=cfg.lambda_sep, lambda_rec=cfg.lambda_rec)
                swap(out / "best.tmp", out / "best")
        save_checkpoint(accelerator, out, progress)
        elapsed = time.perf_counter() - started
        budget_over = bool(cfg.time_budget_min) and elapsed + seconds > cfg.time_budget_min * 66  # 10% grace
        call_over = bool(cfg.stop_after_min) and elapsed + seconds > cfg.stop_after_min * 60
        over = broadcast(torch.tensor([budget_over, call_over], device=device), from_process=0).tolist()
        if any(over) and epoch < progress["epochs"]:
            stopped = bool(over[1])
            accelerator.print(f"{'this call' if stopped else 'the time budget'} is spent after epoch {epoch} of "
                              f"{progress['epochs']}: stopping")  # fmt: skip
            break
    if stopped:  # a fixed plan in pieces: the next call resumes it, the last one evaluates
        accelerator.print(f"checkpoint after epoch {epoch} of {progress['epochs']} in {out}; the best weights so far "
                          f"are in {out / 'best'}. Continue with: python training/train.py --resume {out}")  # fmt: skip
        accelerator.end_training()
        return 0

    # Every process reports its weights (they must agree), in one write: print() writes text and newline apart.
    digest = sum(p.double().sum().item() * (i + 1) for i, p in enumerate(net.state_dict().values()))
    sys.stdout.write(f"[rank {accelerator.process_index}] final weights checksum {digest!r}\n")
    sys.stdout.flush()

    # Final evaluation of the best weights on the test set, paper protocol (PGD-20, step eps/10, no random start).
    best = load_model(out / "best").to(device)
    test_x, test_y, _ = load_dataset(cfg.dataset, "test", cfg.data_dir, cfg.test_size, download=cfg.download)
    test_x, test_y = test_x.to(device), test_y.to(device)
    test_clean, test_pgd = evaluate(accelerator, best, test_x, test_y, cfg, cfg.eval_attack_steps, cfg.eps / 10, False)
    results = {"test_images": len(test_x), "natural_acc": test_clean, f"pgd{cfg.eval_attack_steps}_acc": test_pgd,
               "best_val_pgd_acc": progress["best_val_pgd"], "best_epoch": progress["best_epoch"], "epochs": epoch,
               "train_images": n_train, "val_images": len(val_x), "sgd_steps": progress["step"],
               "train_seconds": progress["train_seconds"], "eps": cfg.eps,
               "attack": f"PGD-{cfg.eval_attack_steps}, step eps/10, no random start"}  # fmt: skip
    if "extensions" in progress:
        results["extensions"] = progress["extensions"]
    if main_process:
        if has_fsr:
            results["fsr_health"] = fsr_health(best, to_float(test_x))
            for problem in fsr_health_problems(results["fsr_health"]):
                accelerator.print(f"warning: the saved model's {problem}")
        shard = cfg.shard_mb * 2**20 if cfg.shard_mb else "5GB"
        shutil.rmtree(out / "model.tmp", ignore_errors=True)
        save_folder(best, out / "model.tmp", max_shard_size=shard, lambda_sep=cfg.lambda_sep, lambda_rec=cfg.lambda_rec)
        if (out / "best" / FSR_HEADS_NAME).is_file():
            shutil.copyfile(out / "best" / FSR_HEADS_NAME, out / "model.tmp" / FSR_HEADS_NAME)
        results["train_config"] = dataclasses.asdict(cfg)
        (out / "model.tmp" / "metrics.json").write_text(json.dumps(results, indent=2))
        swap(out / "model.tmp", out / "model")
    accelerator.print(json.dumps({k: v for k, v in results.items() if k not in ("train_config", "fsr_health")}))
    accelerator.print(f"Hub-ready folder: {out / 'model'} (fsr_models.hub.load_model, timm 'local-dir:', or "
                      "transformers AutoModelForImageClassification.from_pretrained after `import fsr_models`)")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
