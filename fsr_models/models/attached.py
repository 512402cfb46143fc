"""FSR in any timm CNN: `attach_fsr(timm.create_model("resnet50", pretrained=True, num_classes=10))`.

The paper's FSR module "can be easily plugged into" a network. `attach_fsr` puts one after each chosen stage of a
timm CNN that describes its stages in `feature_info` (ResNet, ConvNeXt, EfficientNet, RegNet, ...), without
rebuilding the backbone: a forward hook on the stage's module (its feature_info `module`) passes the stage's output
through FSR, so the backbone's own `forward_features` and `forward_intermediates` run through FSR, and its weights
keep their names under `base.` (FSR's are under `fsr.`).

The network takes RGB pixels in [0, 1] and normalises them inside with the backbone's mean and std, so that attacks
and their eps work in pixel space, as for the zoo's networks; its `pretrained_cfg` says mean 0 and std 1 for that
reason. It is registered with timm as `fsr_attached` (`base_model=<timm name>`), the architecture a saved folder's
config.json names, so that timm's `local-dir:`, transformers' Auto classes and `fsr_models.hub.folders.load_model`
rebuild it.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Sequence

import timm
import torch
import torch.nn as nn
from timm.layers import SelectAdaptivePool2d
from timm.models import generate_default_cfgs, register_model
from timm.models._pretrained import PretrainedCfg

from fsr_models.fsr import FSROutput
from fsr_models.fsr.fsr_core import FSR, FSRParts
from fsr_models.models._build import build_network
from fsr_models.models._fsrnet import check_weights_fit, checked_images
from fsr_models.models._init import init_pytorch_default

__all__ = ["FSRAttached", "attach_fsr"]

# Arguments of timm.create_model that say where weights come from, not what is built: not recorded with the network.
WEIGHT_SOURCE_ARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")
# The backbone's pretrained_cfg keys that describe the attached network too (input size, resizing, labels).
_PRETRAINED_CFG_FIELDS = {f.name for f in dataclasses.fields(PretrainedCfg)}
# Where the backbone's weights came from, the size of its feature map at its test input size, its own paper and notes:
# not inherited (the license is: weights trained from the backbone's carry it). Its input size and the feature map
# there (pool_size) are the attached network's too.
_NOT_INHERITED = ("url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source", "tag", "custom_load")
_NOT_INHERITED += ("test_pool_size", "paper_ids", "paper_name", "origin_url", "description", "notes")
FSR_PAPER = {
    "paper_ids": "arXiv:2303.13846",
    "paper_name": "Feature Separation and Recalibration for Adversarial Robustness",
}


def attached_pretrained_cfg(base_cfg: dict, channels: int | None = None) -> dict:
    """The pretrained_cfg of a network with FSR attached to a backbone of `base_cfg` (taking `channels` input
    channels, default its cfg's): the same input size and resizing, mean 0 and std 1 (it normalises inside), its layer
    names under `base.`, FSR's paper, no weight source."""
    cfg = {k: v for k, v in base_cfg.items() if k in _PRETRAINED_CFG_FIELDS and k not in _NOT_INHERITED}
    size = tuple(cfg.get("input_size", (3, 224, 224)))
    channels = channels or size[0]
    cfg.update(architecture="fsr_attached", input_size=(channels, *size[1:]), mean=(0.0,) * channels, **FSR_PAPER)
    cfg["std"] = (1.0,) * channels
    for key in ("first_conv", "classifier"):  # timm adapts these layers when in_chans or num_classes differ
        names = cfg.get(key)
        if names:
            cfg[key] = f"base.{names}" if isinstance(names, str) else tuple(f"base.{n}" for n in names)
    return cfg


class FSRAttached(nn.Module):
    """A timm CNN (`base`) with FSR modules after the stages `fsr_stages`, taking [0, 1] pixels.

    Args:
        base_model: the backbone: a timm model name (built with `base_args`, `num_classes`, `in_chans`) or a built
            timm model, which is taken over (its hooked stages run through FSR from then on).
        num_classes, in_chans: for a backbone built here (timm's arguments).
        fsr_stages: an index or a list of indices into the backbone's `feature_info` (0-based, as timm's
            `out_indices`; -1 is the last); None: the last stage, the paper's position. Empty: no FSR, the same
            network as a baseline.
        fsr_tau, fsr_separation, fsr_recalibration, fsr_output: passed to every `FSR` module.
        normalize_mean, normalize_std: what the network subtracts from and divides its [0, 1] pixels by before
            the backbone; None: the backbone's own pretrained_cfg mean and std.
        base_pretrained: for a backbone built here, True loads its pretrained weights from timm's source (the
            Hub); a path, from that file (safetensors or timm's checkpoint formats).
        device, dtype: where and in which dtype to create parameters (timm's factory arguments).
        base_args: more arguments of the backbone built here (e.g. `drop_path_rate`); recorded, except where weights
            come from (`pretrained_cfg_overlay`, ...).
    """

    def __init__(
        self,
        base_model: str | nn.Module | None = None,
        num_classes: int | None = None,
        in_chans: int | None = None,
        fsr_stages: int | Sequence[int] | None = None,
        fsr_tau: float = 0.1,
        fsr_separation: bool = True,
        fsr_recalibration: bool = True,
        fsr_output: str = "f_tilde",
        normalize_mean: Sequence[float] | None = None,
        normalize_std: Sequence[float] | None = None,
        base_pretrained: bool | str = False,
        device=None,
        dtype=None,
        **base_args,
    ):
        super().__init__()
        dd = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        if isinstance(base_model, str):
            built_args = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans)) if v is not None}
            if isinstance(base_pretrained, str):
                if not Path(base_pretrained).is_file():
                    raise FileNotFoundError(
                        f"base_pretrained: {base_pretrained} is not a file of {base_model}'s weights"
                    )
                built_args["pretrained_cfg_overlay"] = {"file": base_pretrained}
            pretrained = bool(base_pretrained)
            base = timm.create_model(base_model, pretrained=pretrained, **built_args, **base_args, **dd)
        elif isinstance(base_model, nn.Module):
            base = base_model
        else:
            raise ValueError(
                f"FSR attaches to a built timm CNN, got {type(base_model).__name__}: give "
                "timm.create_model('<name>', ...) (or base_model='<name>' to timm.create_model('fsr_attached'))"
            )
        _check_backbone(base)
        self.base_model_name = _timm_name(base)  # also for "hf-hub:<id>" or "local-dir:<folder>": its architecture
        self.base_args = {k: v for k, v in base_args.items() if k not in WEIGHT_SOURCE_ARGS}
        self._stages = _stage_infos(base, self.base_model_name)  # module names within the backbone
        # timm's feature_info in this network's own module names (features_only, feature extraction by name)
        self.feature_info = [{**info, "module": f"base.{info['module']}"} for info in self._stages]
        self.fsr_stages = _stage_indices(fsr_stages, self._stages, self.base_model_name)
        self.in_chans = _input_channels(base)
        base_cfg = dict(getattr(base, "pretrained_cfg", None) or {})
        mean = normalize_mean if normalize_mean is not None else base_cfg.get("mean", (0.0,) * self.in_chans)
        std = normalize_std if normalize_std is not None else base_cfg.get("std", (1.0,) * self.in_chans)
        if len(mean) != self.in_chans or len(std) != self.in_chans or min(std) <= 0:
            raise ValueError(
                f"normalize_mean {tuple(mean)} and normalize_std {tuple(std)} need {self.in_chans} values each "
                f"(one per input channel of {self.base_model_name}), std positive: give them as normalize_mean / "
                "normalize_std"
            )
        self.normalize_mean, self.normalize_std = tuple(map(float, mean)), tuple(map(float, std))
        weight = next(base.parameters())  # FSR and the pixel statistics join the backbone where it is
        # On the network's device once, not copied there at every forward; not weights: config.json records them
        for name, values in (("pixel_mean", self.normalize_mean), ("pixel_std", self.normalize_std)):
            self.register_buffer(name, torch.tensor(values, device=weight.device).view(1, -1, 1, 1), persistent=False)
        self.base = base
        fsr_args = dict(tau=fsr_tau, separation=fsr_separation, recalibration=fsr_recalibration, output=fsr_output)
        self.fsr = nn.ModuleDict()
        self._stage_modules: dict[str, str] = {}  # FSR module key -> the stage module it follows, for messages
        self._fsr_parts: list[FSRParts] | None = None  # collects each FSR module's parts during forward(return_fsr)
        for index in self.fsr_stages:
            info = self._stages[index]
            key = info["module"].replace(".", "_")  # a ModuleDict key has no dots
            self.fsr[key] = FSR(info["num_chs"], **fsr_args).to(device=weight.device, dtype=weight.dtype)
            self._stage_modules[key] = info["module"]
            _last_call(base.get_submodule(info["module"])).register_forward_hook(
                partial(FSRAttached._after_stage, self, key)
            )
        base.fsr_attached = True  # a second attach_fsr to the same backbone is refused
        self.pretrained_cfg = attached_pretrained_cfg(base_cfg, self.in_chans)
        self.default_cfg = self.pretrained_cfg

    def _after_stage(self, key: str, module: nn.Module, args, output):
        """The forward hook of a stage with FSR: the stage's output passed through its FSR module."""
        fsr = self.fsr[key]
        if not isinstance(output, torch.Tensor) or output.ndim != 4 or output.shape[1] != fsr.channels:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(
                f"{self.base_model_name}: stage {self._stage_modules[key]} gives {shape}, not a batch of "
                f"{fsr.channels} x H x W feature maps (NCHW), which FSR takes: a transformer's tokens, channels-last "
                "maps or several outputs cannot take it"
            )
        if self._fsr_parts is None:
            return fsr(output)
        out, parts = fsr(output, return_parts=True)
        self._fsr_parts.append(parts)
        return out

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.pixel_mean.to(x.dtype)) / self.pixel_std.to(x.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.forward_features(self.normalize(checked_images(x, self.in_chans)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.base.forward_head(x, pre_logits=pre_logits)

    def forward_intermediates(self, x: torch.Tensor, *args, **kwargs):
        """The backbone's `forward_intermediates` on the normalised pixels: a stage with FSR gives FSR's output."""
        return self.base.forward_intermediates(self.normalize(checked_images(x, self.in_chans)), *args, **kwargs)

    def forward(self, x: torch.Tensor, return_fsr: bool = False):
        """Logits; with `return_fsr=True`, an `FSROutput` with the parts of each FSR module, for the FSR losses."""
        if not return_fsr:
            return self.forward_head(self.forward_features(x))
        self._fsr_parts = parts = []
        try:
            logits = self.forward_head(self.forward_features(x))
        finally:
            self._fsr_parts = None
        return FSROutput(logits, tuple(parts))

    @property
    def backbone_args(self) -> dict:
        """The backbone's arguments that a saved folder rebuilds it with: those given, and its pooling now."""
        pools = [m.pool_type for m in self.base.modules() if isinstance(m, SelectAdaptivePool2d)]
        pool = {"global_pool": pools[-1]} if pools and pools[-1] not in ("avg", "") else {}
        return {**self.base_args, **pool}

    def check_stages(self) -> None:
        """One image of the input size through the network (eval mode, no gradient): a ValueError of one line now,
        where the backbone's stages cannot take FSR, rather than at the first batch."""
        weight = next(self.parameters())
        size = self.pretrained_cfg.get("input_size", (self.in_chans, 64, 64))
        was_training = self.training
        try:
            with torch.no_grad():
                self.eval()(torch.zeros(1, *size, device=weight.device, dtype=weight.dtype))
        except RuntimeError as e:  # the stage's output passed the shape test but not FSR's convolutions
            first = str(e).splitlines()[0]
            raise ValueError(f"{self.base_model_name}: FSR cannot follow its stages {self.fsr_stages}: {first}") from e
        finally:
            self.train(was_training)

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    @property
    def num_features(self) -> int:
        return self.base.num_features

    @property
    def head_hidden_size(self) -> int:
        return getattr(self.base, "head_hidden_size", self.base.num_features)

    def get_classifier(self) -> nn.Module:
        return self.base.get_classifier()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.base.set_grad_checkpointing(enable)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """The backbone's parameter groups (layer-wise lr decay) in this network's names, FSR's modules a group of
        their own after the backbone's blocks."""
        return {**_prefixed(self.base.group_matcher(coarse=coarse), "base"), "fsr": r"^fsr\."}

    def prune_intermediate_layers(
        self, indices: int | list[int] | None = None, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """The backbone's pruning (timm's interface, for features_only): the stages after the last of `indices` go,
        and with them the FSR modules that followed them."""
        indices = list(range(len(self._stages))) if indices is None else indices
        kept = self.base.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=prune_head)
        for index in [i for i in self.fsr_stages if i > max(kept)]:
            del self.fsr[self._stages[index]["module"].replace(".", "_")]
        self.fsr_stages = tuple(i for i in self.fsr_stages if i <= max(kept))
        return kept

    def reset_classifier(self, num_classes: int, *args, **kwargs) -> None:
        self.base.reset_classifier(num_classes, *args, **kwargs)

    def fsr_modules(self) -> list[FSR]:
        return list(self.fsr.values())

    def set_fsr_output(self, output: str) -> None:
        """Pass on another FSR feature (f_tilde, f_pos, f_neg, f_neg_recal) in every FSR module (Table 5)."""
        for m in self.fsr_modules():
            m.output = output

    def weight_init(self, modules) -> None:
        """PyTorch's default init (the authors' ResNet-18 FSR keeps it) for FSR and the auxiliary heads, the pixel
        statistics for this module; the backbone's modules keep theirs (its pretrained weights, or timm's init)."""
        modules = list(modules)
        if any(m is self for m in modules):  # transformers' loading leaves non-persistent buffers empty and asks here
            self.pixel_mean.copy_(torch.tensor(self.normalize_mean).view(1, -1, 1, 1))
            self.pixel_std.copy_(torch.tensor(self.normalize_std).view(1, -1, 1, 1))
        backbone = {id(m) for m in self.base.modules()}
        init_pytorch_default(m for m in modules if id(m) not in backbone)

    def _replicate_for_data_parallel(self):
        raise ValueError(
            "FSRAttached runs FSR through hooks on the backbone's stages, which nn.DataParallel's replicas would share "
            "(each would run the first replica's FSR): use DistributedDataParallel, one process per GPU (accelerate "
            "launch, torchrun)"
        )

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Refuse weights that do not fit this network with a ValueError that names them."""
        check_weights_fit(self, state_dict, strict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def extra_repr(self) -> str:
        return f"base_model={self.base_model_name!r}, fsr_stages={list(self.fsr_stages)}"


def _last_call(stage: nn.Module) -> nn.Module:
    """The module whose output is the stage's and whose forward runs whichever way the stage runs: a Sequential
    stage's last block (timm's gradient checkpointing calls the blocks of a flattened Sequential, never the
    Sequential itself), else the stage."""
    while isinstance(stage, nn.Sequential) and len(stage):
        stage = stage[-1]
    return stage


def _prefixed(matcher: dict, prefix: str) -> dict:
    """timm's group_matcher patterns (a regex, or a list of (regex, ordinal)) for the parameters under `prefix.`."""

    def one(pattern: str) -> str:
        return rf"^{prefix}\.(?:{pattern.removeprefix('^').replace('|^', '|')})"

    return {
        group: one(rule) if isinstance(rule, str) else [(one(pattern), order) for pattern, order in rule]
        for group, rule in matcher.items()
    }


def _timm_name(base: nn.Module) -> str:
    name = (getattr(base, "pretrained_cfg", None) or {}).get("architecture")
    if not name:
        raise ValueError(
            f"{type(base).__name__} is not a model timm built (no pretrained_cfg architecture): build the backbone "
            "with timm.create_model, which FSR attaches to and a saved folder names"
        )
    return name


def _check_backbone(base: nn.Module) -> None:
    """A ValueError for a backbone FSR must not attach to as it is: compiled, or with FSR already."""
    if hasattr(base, "_orig_mod"):
        raise ValueError("attach FSR to the network itself, then compile the result: torch.compile(attach_fsr(model))")
    if getattr(base, "fsr_attached", False) or any(isinstance(m, FSR) for m in base.modules()):
        raise ValueError(
            f"{type(base).__name__} has FSR already (an earlier attach_fsr, or a zoo network): attach to a fresh "
            "backbone, or to a copy.deepcopy of it made before"
        )


def _stage_infos(base: nn.Module, name: str) -> list[dict]:
    info = getattr(base, "feature_info", None)
    missing = [a for a in ("forward_features", "forward_head", "reset_classifier") if not hasattr(base, a)]
    if not info or missing:
        raise ValueError(
            f"{name} has no {'feature_info' if not info else ', '.join(missing)}: FSR goes after a stage that timm's "
            "feature_info describes, in a network with timm's forward_features / forward_head (a classifier, "
            "not features_only=True)"
        )
    return [dict(module=i["module"], num_chs=i["num_chs"], reduction=i["reduction"]) for i in info]


def _stage_indices(stages: int | Sequence[int] | None, infos: list[dict], name: str) -> tuple[int, ...]:
    """Indices into `infos` (negative from the end, as timm's out_indices), each once, in network order."""
    if stages is None:
        return (len(infos) - 1,)
    given = [stages] if isinstance(stages, int) else stages
    valid = isinstance(given, (list, tuple)) and all(
        isinstance(s, int) and not isinstance(s, bool) and -len(infos) <= s < len(infos) for s in given
    )
    if not valid:
        described = ", ".join(
            f"{i} {s['module']} ({s['num_chs']} ch, stride {s['reduction']})" for i, s in enumerate(infos)
        )
        raise ValueError(
            f"fsr_stages {stages!r} are not stages of {name}: give a list of feature_info indices (0-based, negative "
            f"from the end); its stages: {described}"
        )
    return tuple(sorted({s % len(infos) for s in given}))


def _input_channels(base: nn.Module) -> int:
    cfg = getattr(base, "pretrained_cfg", None) or {}
    first_conv = cfg.get("first_conv")
    try:
        return base.get_submodule(first_conv).in_channels
    except (AttributeError, TypeError):
        return cfg.get("input_size", (3,))[0]


def attach_fsr(
    model: nn.Module | str,
    stages: int | Sequence[int] | None = None,
    tau: float = 0.1,
    separation: bool = True,
    recalibration: bool = True,
    output: str = "f_tilde",
    normalize_mean: Sequence[float] | None = None,
    normalize_std: Sequence[float] | None = None,
    base_args: dict | None = None,
) -> FSRAttached:
    """`model` (a timm CNN, or a timm name to build it) with FSR after `stages`, taking [0, 1] pixels; its weights
    are kept as they are.

    `stages` index `model.feature_info` as timm's `out_indices` do (None or -1: the last stage, the paper's
    position); `normalize_mean` / `normalize_std` default to the model's pretrained_cfg; `base_args` are the
    arguments the backbone was built with that change its layers (e.g. `{"drop_path_rate": 0.1}`), recorded so a
    saved folder rebuilds it. The model is taken over, as peft's adapters take theirs: its chosen stages run
    through FSR from now on (attach to a `copy.deepcopy(model)` to keep the original). A backbone that cannot take
    FSR (no feature_info, stages that are not C x H x W maps) is a ValueError of one line.
    """
    attached = FSRAttached(
        model,
        fsr_stages=stages,
        fsr_tau=tau,
        fsr_separation=separation,
        fsr_recalibration=recalibration,
        fsr_output=output,
        normalize_mean=normalize_mean,
        normalize_std=normalize_std,
        **(base_args or {}),
    )
    attached.check_stages()
    return attached


def _cfg(**kwargs) -> dict:
    return {
        "num_classes": None,  # the backbone's own, unless given
        "mean": (0.0, 0.0, 0.0),
        "std": (1.0, 1.0, 1.0),
        "license": "mit",
        **FSR_PAPER,
        **kwargs,
    }


default_cfgs = generate_default_cfgs({"fsr_attached": _cfg()})


DEFAULT_BASE = "resnet18"  # what timm.create_model("fsr_attached") attaches to: timm's own (ImageNet) ResNet-18


@register_model
def fsr_attached(pretrained: bool = False, **kwargs) -> FSRAttached:
    """FSR attached to the timm CNN `base_model` (see `FSRAttached`; default timm's `resnet18`), e.g.
    `base_model="resnet50"`; a saved folder's config.json names this architecture and the backbone. With
    `features_only=True` the features come from `forward_intermediates` (timm's "getter"): the stages' own outputs,
    FSR's where FSR follows them."""
    kwargs.setdefault("base_model", DEFAULT_BASE)
    if kwargs.get("features_only") and kwargs.setdefault("feature_cls", "getter") == "getter":
        kwargs.setdefault("out_indices", None)  # every stage the backbone has (prune_intermediate_layers says which)
    given_cfg = kwargs.get("pretrained_cfg")
    model = build_network(FSRAttached, "fsr_attached", pretrained, **kwargs)
    if given_cfg is None and not kwargs.get("features_only"):  # built afresh: the backbone's input size and resizing
        model.pretrained_cfg = model.default_cfg = attached_pretrained_cfg(model.base.pretrained_cfg)
    return model
