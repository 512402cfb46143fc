"""transformers configuration of the FSR zoo's networks.

One `config.json` serves both libraries: the named fields below are transformers', and `to_dict` adds the keys
timm's Hub loader reads (architecture, num_classes, num_features, label_names, model_args, pretrained_cfg), derived
from the same fields so that they cannot disagree.
"""

import dataclasses
import difflib
import functools
import json
import os
from pathlib import Path
from typing import Any

import timm
import torch
import transformers
from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassError
from timm.models import get_pretrained_cfg
from timm.models._pretrained import filter_pretrained_cfg
from transformers import PreTrainedConfig
from transformers.utils import logging

from fsr_models.facts.networks import BACKBONES, DEFENSE_BACKBONE, DEFENSE_NETWORKS, DEFENSE_STAGE_ARGS, DEFENSES
from fsr_models.fsr.fsr_core import check_fsr_config

logger = logging.get_logger(__name__)

FSR_FIELDS = (
    "backbone",
    "fsr_stages",
    "defense",
    "defense_stages",
    "backbone_args",
    "fsr_tau",
    "fsr_separation",
    "fsr_recalibration",
    "fsr_output",
    "lambda_sep",
    "lambda_rec",
    "normalize_mean",
    "normalize_std",
    "pretrained_cfg",
)
# The FSR settings of the timm constructors (model_args), the named fields of the same name here.
FSR_ARGS = ("fsr_stages", "fsr_tau", "fsr_separation", "fsr_recalibration", "fsr_output")
# The architecture timm registers for FSR attached to a timm CNN (`fsr_models.attach_fsr`), and its own arguments.
ATTACHED = "fsr_attached"
TIMM_PREFIX = "timm/"  # a backbone named "timm/<name>" is timm's <name> (as timm's Hub repositories are named)
NORMALIZE_ARGS = ("normalize_mean", "normalize_std")
# Keys timm writes into config.json; derived here, so on load they are checked, not stored twice.
TIMM_KEYS = ("architecture", "num_classes", "num_features", "label_names", "model_args")
# Keyword arguments PreTrainedConfig itself consumes (saved configs and from_pretrained pass them).
_BASE_KWARGS = {
    "torch_dtype",
    "num_labels",
    "name_or_path",
    "_commit_hash",
    "output_attentions",
    "attn_implementation",
    "experts_implementation",
    "per_layer_config",
    "_attn_implementation_internal",
    "_experts_implementation_internal",
}


# Keys that transformers' configs hold or held (PreTrainedConfig's fields, and those its releases write or wrote for
# every model): a config.json that one release wrote loads in another. A key the zoo does not own is kept either way;
# these are kept without a warning.
TRANSFORMERS_KEYS = {f.name for f in dataclasses.fields(PreTrainedConfig)} | {
    "transformers_version",
    "architectures",
    "tie_word_embeddings",
    "use_cache",
    "torchscript",
    "use_bfloat16",
    "pruned_heads",
    "is_decoder",
    "add_cross_attention",
    "tie_encoder_decoder",
    "cross_attention_hidden_size",
    "tie_last_hidden_states",
    "tokenizer_class",
    "prefix",
    "bos_token_id",
    "pad_token_id",
    "eos_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "task_specific_params",
    "finetuning_task",
    "return_dict_in_generate",
    "output_scores",
    "max_length",
    "min_length",
}
# The zoo's own names and their beginnings: a key near one is a misspelt zoo field, refused
_ZOO_PREFIXES = ("fsr_", "lambda_", "normalize_", "backbone", "defense")


def _looks_like_a_zoo_key(key: str) -> bool:
    if key in TRANSFORMERS_KEYS or key in _BASE_KWARGS:
        return False
    known = (*FSR_FIELDS, *TIMM_KEYS)
    return key.startswith(_ZOO_PREFIXES) or bool(difflib.get_close_matches(key, known, n=1, cutoff=0.8))


@strict
class FSRConfig(PreTrainedConfig):
    r"""Configuration of an FSR zoo network (`FSRForImageClassification`).

    Args:
        backbone (`str`, defaults to `"resnet18"`):
            The network: `"resnet18"` (CIFAR ResNet-18), `"vgg16"` (VGG16 with BN) or `"wrn34_10"` (WideResNet-34-10),
            or `"timm/<name>"`, the timm CNN `<name>` (e.g. `"timm/resnet50"`, `"timm/convnext_tiny"`) with FSR
            attached to it (`fsr_models.attach_fsr`).
        fsr_stages (`list[int]`, *optional*):
            The FSR positions. For the zoo's networks, stages (1-based) followed by an FSR module; `None` is the
            paper's position (after stage 4 of ResNet-18 and VGG16, group 3 of WRN-34-10); `[]` is the plain network.
            For a timm CNN, indices into its `feature_info` (0-based, as timm's `out_indices`); `None` is the last.
        defense (`str`, *optional*):
            One of the feature-level defenses that FSR's Table 4 compares with, in place of FSR: `"cas"` (Channel-wise
            Activation Suppressing), `"cifs"` (Channel-wise Importance-based Feature Selection) or `"fd"` (Feature
            Denoising); ResNet-18 only, with `fsr_stages` `[]`. `None`: FSR, or the plain network.
        defense_stages (`list[int]`, *optional*):
            The stages (1-based) followed by the defense; `None` is where the zoo places it (CAS and CIFS after each
            block of stage 4, Feature Denoising after every stage).
        backbone_args (`dict`, *optional*):
            The backbone's own architecture arguments: `layers` / `widths` (ResNet), `stages` (VGG), `depth` /
            `widen_factor` (WRN), or a timm CNN's `timm.create_model` arguments. `None` is the paper's network (or
            timm's default).
        fsr_tau (`float`, defaults to 0.1):
            Temperature of the Gumbel-softmax mask (Eq. 2).
        fsr_separation (`bool`, defaults to `True`):
            Keep the Separation stage (`False` is the paper's "w/o Sep" ablation).
        fsr_recalibration (`bool`, defaults to `True`):
            Keep the Recalibration stage (`False` is the paper's "w/o Rec" ablation).
        fsr_output (`str`, defaults to `"f_tilde"`):
            The feature FSR passes on: `"f_tilde"` (the paper's f+ + f~-), `"f_pos"`, `"f_neg"` or `"f_neg_recal"`.
        lambda_sep (`float`, defaults to 1.0):
            Weight of the separation loss (Eq. 5) in training; recorded with the weights it produced.
        lambda_rec (`float`, defaults to 1.0):
            Weight of the recalibration loss (Eq. 5) in training.
        normalize_mean (`list[float]`, *optional*):
            For a timm CNN: what the network subtracts from its [0, 1] pixels before the backbone (the backbone's
            pretrained mean, by default). The zoo's networks take the pixels as they are: `None`.
        normalize_std (`list[float]`, *optional*):
            For a timm CNN: what the network then divides by (the backbone's pretrained std, by default).
        pretrained_cfg (`dict`, *optional*):
            timm's pretrained config (input size, identity mean/std for [0, 1] pixels, license, paper, tag);
            `None` takes timm's registered defaults for the architecture.

    Labels are transformers' usual `id2label` / `num_labels`. Inputs are RGB pixels in [0, 1], NCHW.

    Example:
    ```python
    >>> import fsr_models
    >>> from fsr_models.hf import FSRConfig, FSRForImageClassification
    >>> model = FSRForImageClassification(FSRConfig(backbone="vgg16", num_labels=100))
    ```
    """

    model_type = "fsr"

    backbone: str = "resnet18"
    fsr_stages: list[int] | tuple[int, ...] | None = None
    defense: str | None = None
    defense_stages: list[int] | tuple[int, ...] | None = None
    backbone_args: dict[str, Any] | None = None
    fsr_tau: float | int = 0.1
    fsr_separation: bool = True
    fsr_recalibration: bool = True
    fsr_output: str = "f_tilde"
    lambda_sep: float | int = 1.0
    lambda_rec: float | int = 1.0
    normalize_mean: list[float] | tuple[float, ...] | None = None
    normalize_std: list[float] | tuple[float, ...] | None = None
    pretrained_cfg: dict[str, Any] | None = None

    def __post_init__(self, **kwargs):
        # A timm CNN's name is checked here; the rest as a Hub repository's own code checks it (fsr_core)
        attached = self.backbone.startswith(TIMM_PREFIX) and timm.is_model(self.timm_backbone)
        check_fsr_config(
            None if attached else self.backbone, self.fsr_tau, self.fsr_output, " or 'timm/<a timm model name>'"
        )
        if self.defense is not None:
            if self.defense not in DEFENSES or self.backbone != DEFENSE_BACKBONE:
                raise ValueError(
                    f"FSRConfig.defense {self.defense!r} of {self.backbone}: the defenses are {list(DEFENSES)}, in "
                    f"{DEFENSE_BACKBONE} only"
                )
            if self.fsr_stages:
                raise ValueError(
                    f"FSRConfig: a network with defense {self.defense!r} has no FSR: fsr_stages must be []"
                )
            self.fsr_stages = []
            if self.defense_stages is not None:
                self.defense_stages = list(self.defense_stages)
                stages = range(1, BACKBONES[self.backbone].num_stages + 1)
                if not self.defense_stages or not set(self.defense_stages) <= set(stages):
                    raise ValueError(
                        f"FSRConfig.defense_stages must be stages in 1..{stages[-1]}, at least one (without the "
                        f"defense the network is resnet18_plain), got {self.defense_stages}"
                    )
        elif self.defense_stages is not None:
            raise ValueError("FSRConfig.defense_stages places a defense: give defense ('cas', 'cifs' or 'fd') too")
        if self.backbone in BACKBONES:
            paper_stages, stage_count = BACKBONES[self.backbone].fsr_stages, BACKBONES[self.backbone].num_stages
            self.fsr_stages = list(paper_stages if self.fsr_stages is None else self.fsr_stages)
            if not set(self.fsr_stages) <= set(range(1, stage_count + 1)):
                raise ValueError(
                    f"FSRConfig.fsr_stages of {self.backbone} must be in 1..{stage_count}, got {self.fsr_stages}"
                )
            if self.normalize_mean is not None or self.normalize_std is not None:
                raise ValueError(f"{self.backbone} takes [0, 1] pixels as they are: normalize_mean/std must be None")
        elif self.fsr_stages is not None:
            self.fsr_stages = list(self.fsr_stages)
        if self.pretrained_cfg is None:  # timm's registered defaults (input size, identity mean/std, paper) sans tag
            if self.timm_backbone:  # the timm CNN's, FSR attached (models import this module: imported here)
                from fsr_models.models.attached import attached_pretrained_cfg

                defaults = attached_pretrained_cfg(get_pretrained_cfg(self.timm_backbone).to_dict())
            else:
                defaults = get_pretrained_cfg(self.timm_architecture).to_dict()
            # where a tag's weights come from (its Hub id) is not part of a config, as timm's own saved configs
            defaults = filter_pretrained_cfg(defaults, remove_source=True, remove_null=False)
            self.pretrained_cfg = {k: v for k, v in defaults.items() if k not in ("tag", "num_classes", "label_names")}
        # Labels are transformers' id2label / num_labels (which from_pretrained may override); timm's copies of
        # them are rewritten on save. The architecture keys must agree with the named fields.
        saved_timm_keys = {k: kwargs.pop(k) for k in TIMM_KEYS if k in kwargs}
        if "num_classes" in saved_timm_keys and self.id2label is None:
            kwargs.setdefault("num_labels", saved_timm_keys["num_classes"])
        # The map to a Hub repository's own code (fsr_models.hf.remote, for loading without this package) belongs
        # to that repository: a model saved from here gets it again only where hub/publish.py writes the code too.
        kwargs.pop("auto_map", None)
        if kwargs.pop("model_type", self.model_type) != self.model_type:
            raise ValueError(f"not an FSR config: model_type must be {self.model_type!r}")
        misspelt = sorted(k for k in kwargs if _looks_like_a_zoo_key(k))
        if misspelt:
            raise ValueError(
                f"unknown FSRConfig field(s) {misspelt}; FSR fields are {list(FSR_FIELDS)}, timm keys "
                f"{list(TIMM_KEYS)}, labels id2label/num_labels. Check the spelling in config.json or the arguments."
            )
        foreign = sorted(
            k for k in kwargs if k not in _BASE_KWARGS and k not in TRANSFORMERS_KEYS and not k.startswith("_")
        )
        if foreign:  # not the zoo's: kept as they are, as transformers keeps any config's extra keys
            logger.warning_once(
                f"FSRConfig: config key(s) {foreign} are neither the zoo's nor known to this transformers "
                f"({transformers.__version__}): kept as they are (a newer transformers, or another tool, wrote them)"
            )
        super().__post_init__(**kwargs)
        if self.num_labels < 1:
            raise ValueError(f"FSRConfig needs at least one label, got num_labels={self.num_labels}")
        for key in ("architecture", "model_args"):
            if key in saved_timm_keys and saved_timm_keys[key] != self.timm_fields()[key]:
                raise ValueError(
                    f"config.json disagrees with itself: {key}={saved_timm_keys[key]!r}, but the named fields "
                    f"(backbone, fsr_*, backbone_args) give {self.timm_fields()[key]!r}. timm reads {key}, "
                    "transformers the named fields: make both say the same, or re-save the model."
                )

    @property
    def timm_backbone(self) -> str | None:
        """The name of the timm CNN that FSR is attached to (None for the zoo's own networks)."""
        return self.backbone.removeprefix(TIMM_PREFIX) if self.backbone.startswith(TIMM_PREFIX) else None

    @property
    def timm_architecture(self) -> str:
        if self.timm_backbone:
            return ATTACHED
        if self.defense:
            return f"{self.backbone}_{self.defense}"
        return f"{self.backbone}_{'fsr' if self.fsr_stages else 'plain'}"

    @property
    def timm_model_args(self) -> dict[str, Any]:
        """Keyword arguments for `timm.create_model(self.timm_architecture, ...)`, num_classes excluded."""
        if self.timm_backbone:
            named = {k: getattr(self, k) for k in ("fsr_stages", *NORMALIZE_ARGS) if getattr(self, k) is not None}
            fsr = {k: getattr(self, k) for k in FSR_ARGS[1:]}
            return {"base_model": self.timm_backbone, **(self.backbone_args or {}), **named, **fsr}
        if self.defense_stages is not None:
            return {**(self.backbone_args or {}), f"{self.defense}_stages": list(self.defense_stages)}
        if not self.fsr_stages:
            return dict(self.backbone_args or {})
        return {
            **(self.backbone_args or {}),
            "fsr_stages": list(self.fsr_stages),
            "fsr_tau": self.fsr_tau,
            "fsr_separation": self.fsr_separation,
            "fsr_recalibration": self.fsr_recalibration,
            "fsr_output": self.fsr_output,
        }

    @property
    def num_features(self) -> int:
        """Width of the final feature, for timm's config.json."""
        args = self.backbone_args or {}
        if self.timm_backbone:
            return _timm_num_features(self.timm_backbone, json.dumps(args, sort_keys=True))
        if "widths" in args:
            return args["widths"][-1]
        if "stages" in args:
            return args["stages"][-1][0]
        if "widen_factor" in args:
            return 64 * args["widen_factor"]
        return BACKBONES[self.backbone].num_features

    def timm_fields(self) -> dict[str, Any]:
        # model_args never holds num_classes: transformers' timm wrapper would receive it twice (timm 1.0.31 trap).
        return {
            "architecture": self.timm_architecture,
            "num_classes": self.num_labels,
            "num_features": self.num_features,
            "label_names": [self.id2label[i] for i in sorted(self.id2label)],
            "model_args": self.timm_model_args,
        }

    def to_dict(self) -> dict[str, Any]:
        out = {**super().to_dict(), **self.timm_fields()}
        if self.defense is None:  # named only where there is one: an FSR or plain network's config stays as it was
            del out["defense"], out["defense_stages"]
        return out

    @classmethod
    def from_timm_model(cls, model, **kwargs) -> "FSRConfig":
        """The config of a zoo network built by timm (its architecture, FSR settings, labels, pretrained_cfg)."""
        # Where the weights came from (a file, a state dict, a Hub id) is not part of the saved model's config.
        pretrained_cfg = filter_pretrained_cfg(dict(getattr(model, "pretrained_cfg", None) or {}), remove_source=True)
        pretrained_cfg.pop("state_dict", None)
        model_args = {**model.backbone_args, "in_chans": model.in_chans, "fsr_stages": list(model.fsr_stages)}
        for key, network in zip(DEFENSE_STAGE_ARGS, DEFENSE_NETWORKS):
            stages = list(getattr(model, key, ()))
            named = pretrained_cfg.get("architecture") == network
            if stages and not named:  # the config would name another network than the weights
                raise ValueError(
                    f"{key}: a network with this defense is saved as {network} (timm.create_model({network!r}, "
                    f"{key}=...)), not as {pretrained_cfg.get('architecture')}"
                )
            if named and (not stages or model.fsr_stages):
                raise ValueError(
                    f"{network} with {key}={tuple(stages)} and fsr_stages={model.fsr_stages} is not the network its "
                    "name says: without its defense it is resnet18_plain (or resnet18_fsr)"
                )
            if stages:
                model_args[key] = stages
        if hasattr(model, "base_model_name"):  # FSR attached to a timm CNN (fsr_models.attach_fsr)
            normalize = {"normalize_mean": list(model.normalize_mean), "normalize_std": list(model.normalize_std)}
            model_args.update(base_model=model.base_model_name, **normalize)
        else:
            model_args["global_pool"] = model.global_pool.pool_type
        if model.fsr_stages:
            first = model.fsr_modules()[0]
            model_args.update(
                fsr_tau=first.tau,
                fsr_separation=first.separation_net is not None,
                fsr_recalibration=first.recalibration_net is not None,
                fsr_output=first.output,
            )
        timm_config = {
            "architecture": pretrained_cfg.get("architecture", ""),
            "num_classes": model.num_classes,
            "model_args": model_args,
            "pretrained_cfg": pretrained_cfg,
        }
        return cls.from_timm_config(timm_config, **kwargs)

    @classmethod
    def from_timm_config(cls, timm_config: dict[str, Any], **kwargs) -> "FSRConfig":
        """The config of a folder in timm's own layout, as `timm.models.save_for_hf` and `push_to_hf_hub` write it
        (architecture, num_classes, model_args, pretrained_cfg, ...), checked as a zoo config.json is checked: an
        architecture that is not the zoo's, an unknown key or a bad value is a ValueError."""
        fields = dict(timm_config)
        arch = fields.pop("architecture", None)
        model_args = dict(fields.pop("model_args", None) or {})
        backbone, _, kind = str(arch).rpartition("_")
        if arch == ATTACHED:
            base_model, kind = model_args.pop("base_model", None), "attached"
            if not isinstance(base_model, str):
                raise ValueError(f"{ATTACHED} needs model_args.base_model, the timm CNN that FSR is attached to")
            backbone = f"{TIMM_PREFIX}{base_model}"
            fields.update({key: model_args.pop(key) for key in NORMALIZE_ARGS if key in model_args})
        elif arch in DEFENSE_NETWORKS:
            fields.update(defense=kind, defense_stages=model_args.pop(f"{kind}_stages", None))
        elif backbone not in BACKBONES or kind not in ("fsr", "plain"):
            known = [f"{b}_{k}" for b in BACKBONES for k in ("fsr", "plain")] + [*DEFENSE_NETWORKS, ATTACHED]
            raise ValueError(f"architecture {arch!r} is not an FSR zoo network (one of {known})")
        num_classes = fields.pop("num_classes", model_args.get("num_classes"))
        if model_args.pop("num_classes", num_classes) != num_classes:
            raise ValueError(f"num_classes {num_classes} disagrees with model_args' {timm_config['model_args']}")
        fields.pop("num_features", None)  # derived from the architecture
        fields.pop("label_descriptions", None)  # timm's descriptions of label names, which the zoo does not keep
        backbone_args = {**model_args, "global_pool": model_args.pop("global_pool", fields.pop("global_pool", "avg"))}
        fsr_fields = {key: backbone_args.pop(key) for key in FSR_ARGS if key in backbone_args}
        if kind == "plain" or arch in DEFENSE_NETWORKS:
            fsr_fields["fsr_stages"] = []
        # The defaults (3 channels, average pooling) are left out, as the zoo's own configs leave them out.
        backbone_args = {
            k: v for k, v in backbone_args.items() if (k, v) not in (("in_chans", 3), ("global_pool", "avg"))
        }
        pretrained_cfg = dict(fields.pop("pretrained_cfg", None) or {})
        labels = fields.pop("label_names", None) or pretrained_cfg.get("label_names")
        if isinstance(labels, dict):  # timm allows {class index: name}
            labels = [labels[k] for k in sorted(labels, key=int)]
        if not labels or len(labels) != num_classes:
            labels = [f"LABEL_{i}" for i in range(num_classes)]
        pretrained_cfg = {k: v for k, v in pretrained_cfg.items() if k not in ("num_classes", "label_names")}
        return cls(
            backbone=backbone,
            backbone_args=backbone_args,
            pretrained_cfg=pretrained_cfg or None,
            id2label=dict(enumerate(labels)),
            **fsr_fields,
            **fields,  # any other key is unknown: refused with the list of known ones
            **kwargs,
        )


@functools.lru_cache
def _timm_num_features(name: str, args_json: str) -> int:
    """The final feature width of the timm model `name` built with the arguments `args_json` (on the meta device:
    nothing is allocated)."""
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, **json.loads(args_json)).num_features


def read_folder_config(folder: str | os.PathLike) -> dict[str, Any]:
    """A zoo folder's config.json, checked as transformers checks it (field types, known fields, a backbone that
    exists, timm's keys agreeing with the named fields), so that every loader refuses what one refuses: a ValueError
    of one line that names the file and the field. A folder that timm itself wrote (`save_for_hf`, `push_to_hf_hub`:
    no model_type, timm's keys) is checked as its `FSRConfig.from_timm_config`."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}; fix the file or save the model again") from None
    written_by_timm = isinstance(config, dict) and "model_type" not in config and "pretrained_cfg" in config
    if not written_by_timm and (not isinstance(config, dict) or config.get("model_type") != FSRConfig.model_type):
        raise ValueError(
            f"{path} is not the config of an FSR zoo model (model_type {FSRConfig.model_type!r}, or timm's layout "
            "with architecture and pretrained_cfg)"
        )
    try:
        FSRConfig.from_timm_config(config) if written_by_timm else FSRConfig.from_dict(config)
    except (ValueError, TypeError, StrictDataclassError) as e:
        reason = " ".join(str(e).split())
        raise ValueError(f"{path}: {reason}") from None
    return config
