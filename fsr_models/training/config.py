"""The settings of a training run: `TrainConfig`, read from a YAML file and `--set key=value` items over the paper's
recipe for the data set, checked where they are written; and the settings a resumed run may change."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import sys
from pathlib import Path

import yaml

from fsr_models.evaluation.attacks import pixel_fraction
from fsr_models.facts.datasets import DATASETS
from fsr_models.hub.weight_files import zoo_name
from fsr_models.training.losses import METHODS

# torch.compile modes ("none": eager). "reduce-overhead" records CUDA graphs on a GPU, the fast path there.
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
TRAINING_ATTACKS = ("pgd", "nfgsm")
LR_SCHEDULES = ("step", "cyclic")
COLLAPSE_FLOOR = 0.2  # a validation PGD accuracy below it is too low for a fall from it to tell a collapse
# Settings that --resume may change: they do not change what the run computes.
RESUME_MAY_CHANGE = {"data_dir", "download", "log_every", "stop_after_min", "compile", "shard_mb", "output_dir"}

LR_BATCH = 128  # a config gives the learning rate per 128 images (`lr_per_128`)


def scaled_lr(lr_per_128: float, batch_size: int) -> float:
    """The learning rate of a batch of `batch_size` for a config's `lr_per_128`, scaled linearly."""
    return lr_per_128 * batch_size / LR_BATCH


def milestone_epochs(fractions: list[float], epochs: int) -> list[int]:
    """The epochs after which the learning rate drops, for milestones given as fractions of `epochs`."""
    return [round(f * epochs) for f in fractions]


class ConfigError(ValueError):
    """A setting or command line that cannot run; the message says what to change (exit 2, no traceback)."""


def one_line_errors(main):
    """A command's `main(argv)` whose user errors (a config that cannot run, a missing file or data set, an output
    folder in the way) end in one line `error: ...` on stderr and exit code 2, not a traceback."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except (ConfigError, FileNotFoundError, FileExistsError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return wrapped


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a run; the YAML files name a subset, the rest keep these (the paper's) defaults."""

    model: str = "resnet18_fsr"  # a zoo network, or a timm CNN to attach FSR to (ignored when `init` is set)
    # Extra timm.create_model arguments; for a timm CNN also fsr_stages (feature_info indices, default the last; []
    # none) and base_pretrained (start from its pretrained weights)
    model_args: dict = dataclasses.field(default_factory=dict)
    init: str | None = None  # fine-tune from a zoo model: registered tag, hf-hub:<id> or a folder
    dataset: str = "cifar10"  # cifar10, cifar100, svhn, tiny_imagenet
    data_dir: str | None = None  # default $FSR_DATA_DIR
    download: bool = False  # let torchvision download the data set into data_dir when it is not there
    train_limit: int | None = None  # use only the first N training images (quick runs)
    val_size: int = 1000  # held out from the end of the training images, for the best checkpoint
    test_size: int = 10000  # test images of the final evaluation
    method: str = "at"  # natural, at, trades, mart
    beta: float = 6.0  # TRADES / MART
    # CAS and CIFS (model resnet18_cas / resnet18_cifs): the weight of their auxiliary heads' cross-entropy in the
    # loss they train with and their training attack maximises (fsr_models.defenses.defense_loss; 2 in both papers)
    defense_beta: float = 2.0
    lambda_sep: float = 1.0
    lambda_rec: float = 1.0
    epochs: int = 100
    time_budget_min: float | None = None  # fit the epochs into this many minutes (measured on epoch 1)
    stop_after_min: float | None = None  # stop this call (checkpointed) before its minutes run out; --resume goes on
    batch_size: int = 128  # global, over all processes
    lr_per_128: float = 0.1  # the learning rate of a batch of 128; SGD runs at lr_per_128 * batch_size / 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # "step": the warm-up, then x lr_gamma at each of lr_milestones (fractions of the epochs); "cyclic": from 0 up to
    # the lr at half the SGD steps and down to 0 at the last, linearly (N-FGSM's CyclicLR; no warm-up or milestones)
    lr_schedule: str = "step"
    lr_milestones: list = dataclasses.field(default_factory=lambda: [0.75, 0.9])  # fractions of the epochs
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear learning-rate warm-up from lr / steps to lr, counted in SGD steps
    weight_init: str = "authors"  # "authors" (each backbone's own) or "vgg" (VGG16's init for any network)
    eps: float | str = "8/255"
    # The training attack of method at: "pgd" (projected onto the eps-ball, the paper's) or "nfgsm" (N-FGSM, de Jorge
    # et al. 2022: noise of attack_noise * eps, one step of attack_step_size, no projection; attack_steps 1); TRADES
    # and MART form their own, and method natural none
    attack: str = "pgd"
    attack_noise: float = 2.0  # nfgsm: the uniform noise's size, in eps
    attack_step_size: float | str = "2/255"  # of the training attack's steps
    attack_steps: int = 10  # how many
    random_start: bool = True
    # Catastrophic overfitting: the run stops, keeping its best weights, when the validation PGD accuracy falls
    # below this fraction of its best (a best of at least COLLAPSE_FLOOR); 0 never stops
    collapse_fraction: float = 0.5
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
    tag: str | None = None  # the trained model's tag (model.tag): default {method}_{dataset}, the paper's setting

    @property
    def model_tag(self) -> str:
        return self.tag or f"{self.method}_{self.dataset}"

    def __post_init__(self):
        for name in ("eps", "attack_step_size"):
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
        glued = [k for k in self.model_args if isinstance(k, str) and ":" in k]
        if glued:  # YAML reads {key:1} as the key "key:1"
            raise ConfigError(f"model_args key(s) {glued}: YAML needs a space after the colon ({{key: value}})")
        if not all(isinstance(f, (int, float)) and 0 < f <= 1 for f in self.lr_milestones):
            raise ConfigError(f"lr_milestones are fractions of the epochs in (0, 1], got {self.lr_milestones}")
        if self.val_size < 1 or self.test_size < 1:
            raise ConfigError(
                "val_size and test_size must be at least 1 (the best checkpoint and the final test need them)"
            )
        for name in ("epochs", "batch_size", "attack_steps", "val_attack_steps", "eval_attack_steps"):
            if getattr(self, name) < (0 if "attack" in name else 1):
                raise ConfigError(f"{name} must be at least {0 if 'attack' in name else 1}, got {getattr(self, name)}")
        for name in (
            "lr_per_128",
            "warmup_epochs",
            "weight_decay",
            "momentum",
            "time_budget_min",
            "stop_after_min",
            "defense_beta",
        ):
            if (getattr(self, name) or 0) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"compile must be one of {COMPILE_MODES}, got {self.compile!r}")
        if self.attack not in TRAINING_ATTACKS:
            raise ConfigError(f"attack must be one of {TRAINING_ATTACKS}, got {self.attack!r}")
        if self.attack == "nfgsm" and (self.method not in ("at", "natural") or self.attack_steps != 1):
            raise ConfigError(
                f"attack nfgsm is the single-step attack of method at: set method: at and attack_steps: 1 (got method "
                f"{self.method}, attack_steps {self.attack_steps})"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not 0 <= self.collapse_fraction < 1:
            raise ConfigError(f"collapse_fraction must be in [0, 1) (0: never stop), got {self.collapse_fraction}")
        if self.attack_noise < 0:
            raise ConfigError(f"attack_noise must not be negative, got {self.attack_noise}")
        if self.tag is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_]*", str(self.tag)):
            raise ConfigError(f"tag must be lowercase letters, digits and underscores (at_cifar10), got {self.tag!r}")
        if self.weight_init not in ("authors", "vgg"):
            raise ConfigError(f"weight_init must be 'authors' or 'vgg', got {self.weight_init!r}")
        self.output_dir = self.output_dir.format(
            model=Path(self.init or self.model).name, method=self.method, dataset=self.dataset
        )


def check_processes(cfg: TrainConfig, processes: int, resuming: bool) -> None:
    """A ConfigError naming what to change when the run cannot split over `processes`: its global batch, or its
    validation slice (every process attacks at least one image of it)."""
    if cfg.batch_size % processes:
        counts = [n for n in range(1, 17) if cfg.batch_size % n == 0]
        todo = (
            f"the run keeps its global batch: resume it on a number of processes among {counts}"
            if resuming
            else f"give a batch_size divisible by {processes}, or launch one of {counts} processes"
        )
        raise ConfigError(
            f"batch_size {cfg.batch_size} (the global batch) does not split over {processes} processes: {todo}"
        )
    if cfg.val_size < processes:
        raise ConfigError(
            f"val_size {cfg.val_size} is smaller than the {processes} processes: each validates at least one image, "
            f"give val_size {processes} or more"
        )


def portable_config(values: dict) -> dict:
    """A run's settings (`dataclasses.asdict` of its TrainConfig) as someone on another machine can use them, for
    what is published: no path of this machine. `data_dir` stays only as "sample" (the shipped slice; otherwise None:
    the reader gives their own folder), `output_dir` becomes runs/<the run folder's name>, and `init`, a folder that
    fine-tuning started from, becomes the zoo name of the model it holds (`<architecture>.<tag>`)."""
    out = {**values, "output_dir": f"runs/{Path(values.get('output_dir') or 'run').name}"}
    out["data_dir"] = "sample" if str(values.get("data_dir")) == "sample" else None
    if values.get("init"):
        out["init"] = zoo_name(values["init"])
    return out


def config_values(path: str | None, overrides: list[str]) -> dict:
    """The settings a YAML file and `--set key=value` items give, each key checked where it was written."""
    known = set(valid_keys())
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
            raise ConfigError(f"unknown config key(s) {unknown} in {path}; valid keys: {valid_keys()}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        if key not in known:
            raise ConfigError(f"unknown config key {key!r} in --set {item}; valid keys: {valid_keys()}")
        values[key] = yaml.safe_load(value)
    return values


def valid_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def load_config(path: str | None, overrides: list[str]) -> TrainConfig:
    """The settings of a new run: the config file and --set, over the paper's recipe for the data set (SVHN's lr,
    attack step and augmentation differ from CIFAR-10's), over TrainConfig's defaults."""
    values = config_values(path, overrides)
    recipe = DATASETS[values["dataset"]].recipe if values.get("dataset") in DATASETS else {}
    return TrainConfig(**{**recipe, **values})


def resumed_config(out: Path, path: str | None, overrides: list[str]) -> TrainConfig:
    """The settings saved in a run folder; a config file or --set may repeat them or change RESUME_MAY_CHANGE."""
    if not (out / "config.yaml").is_file():
        raise ConfigError(f"--resume: {out} holds no run (no config.yaml); start without --resume or fix the folder")
    saved_values = yaml.safe_load((out / "config.yaml").read_text())
    unknown = sorted(set(saved_values) - set(valid_keys()))
    if unknown:
        raise ConfigError(
            f"--resume: {out / 'config.yaml'} has settings this version does not know, {unknown}: it was written by "
            "another version of fsr-zoo; resume it with that version, or start a new run"
        )
    saved = dataclasses.asdict(TrainConfig(**saved_values))
    given = dataclasses.asdict(TrainConfig(**{**saved_values, **config_values(path, overrides)}))
    changed = {k: (saved.get(k), v) for k, v in given.items() if saved.get(k) != v and k not in RESUME_MAY_CHANGE}
    if changed:
        hint = " To train longer, use --epochs N with --lr-extension." if "epochs" in changed else ""
        raise ConfigError(
            f"--resume with settings that differ from {out / 'config.yaml'} (saved, given): {changed}. "
            f"A resumed run keeps its settings: resume with --resume {out} alone.{hint}"
        )
    return TrainConfig(**{**given, "output_dir": str(out)})
