"""What a record's network is, in words (with FSR, another defense or neither, and where), how its run differs from
the paper's setting of its tag, and the name of its Hub repository."""

from __future__ import annotations

import functools
from typing import NamedTuple

import timm
import torch

from fsr_models.evaluation.report import eps_text, joined
from fsr_models.facts.datasets import DATASETS
from fsr_models.facts.networks import BACKBONES, HF_ORG
from fsr_models.facts.paper import PAPER_EPS, is_paper_eps
from fsr_models.hub.records import Record


@functools.cache
def paper_backbone_args(architecture: str) -> dict:
    """The paper network's own architecture arguments (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        return {"in_chans": 3, "global_pool": "avg", **timm.create_model(architecture).backbone_args}


def _dashed(value) -> str:
    items = value if isinstance(value, (list, tuple)) else [value]
    return "-".join("x".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in items)


def network_name(config: dict) -> str:
    """'ResNet-18', 'WideResNet-28-4', or 'ResNet-18-like network (<what differs from the paper's>)'."""
    backbone, args = config["backbone"], config.get("backbone_args") or {}
    if backbone == "wrn34_10":
        paper = paper_backbone_args(config["architecture"])
        depth, widen = (args.get(k, paper[k]) for k in ("depth", "widen_factor"))
        other = [f"{k} {v}" for k, v, _ in _backbone_deviations(config) if k not in ("depth", "widen_factor")]
        return f"WideResNet-{depth}-{widen}" + (f" ({', '.join(other)})" if other else "")
    differs = [f"{key} {value}" for key, value, _ in _backbone_deviations(config)]
    name = BACKBONES[backbone].name
    return f"{name}-like network ({', '.join(differs)})" if differs else name


def _backbone_deviations(config: dict) -> list[tuple[str, str, str]]:
    """(argument, value as text, sentence) for each architecture argument that differs from the paper's."""
    paper = paper_backbone_args(config["architecture"])
    return [
        (key, _dashed(value), f"{key} {_dashed(value)} (the paper's: {_dashed(paper.get(key))})")
        for key, value in (config.get("backbone_args") or {}).items()
        if value != paper.get(key)
    ]


def deviations(record: Record) -> list[tuple[str, str]]:
    """How a run differs from the paper's setting of its tag, as (repository-name part, sentence): the network, FSR's
    settings, a subset of the training images, another eps. A shorter schedule is not among them (its card says it)."""
    config = record.config
    out = [(f"{key.replace('_', '')}{value}", text) for key, value, text in _backbone_deviations(config)]
    stages = config.get("fsr_stages") or []
    if stages:
        paper_stages = list(BACKBONES[config["backbone"]].fsr_stages)
        if stages != paper_stages:
            out.append(
                (f"fsr{_dashed(stages)}", f"FSR {after_stages(stages)} (the paper's: {after_stages(paper_stages)})")
            )
        if config.get("fsr_tau", 0.1) != 0.1:
            out.append((f"tau{config['fsr_tau']:g}", f"mask temperature tau {config['fsr_tau']:g} (the paper's: 0.1)"))
        for part, stage in (("sep", "Separation"), ("rec", "Recalibration")):
            if config.get(f"fsr_{stage.lower()}") is False:
                out.append((f"no{part}", f"without FSR's {stage} stage (the paper's 'w/o {part.title()}' ablation)"))
        if config.get("fsr_output", "f_tilde") != "f_tilde":
            output = config["fsr_output"]
            out.append((f"out{output.replace('_', '')}", f"FSR passes on {output} (the paper's Table 5 analysis)"))
        for key in ("lambda_sep", "lambda_rec"):
            if config.get(key, 1.0) != 1.0:
                out.append((f"{key.replace('ambda_', '')}{config[key]:g}", f"{key} {config[key]:g} (the paper's: 1)"))
    run = record.run
    if run["subset"]:
        out.append(
            (
                f"train{run['train_images']}",
                f"trained on {run['train_images']:,} of the {DATASETS[run['dataset']].train_images:,} "
                f"{DATASETS[run['dataset']].name} training images",
            )
        )
    eps = record.train.get("eps") or record.metrics.get("test", {}).get("eps", PAPER_EPS)
    if not is_paper_eps(eps):
        out.append((f"eps{eps * 255:g}", f"trained for eps {eps_text(eps)} (the paper's: 8/255)"))
    return out


def paper_repo_id(config: dict) -> str:
    return f"{HF_ORG}/{config['architecture']}.{config['pretrained_cfg']['tag']}"


def default_repo_id(record: Record) -> str:
    """`fsr-zoo/<architecture>.<tag>` in the paper's setting of the tag, else with the deviations appended
    (`fsr-zoo/resnet18_fsr.at_cifar10.widths16-32-64-128.train250`): a paper tag's name is never taken."""
    return ".".join([paper_repo_id(record.config), *(part for part, _ in deviations(record))])


def after_stages(stages: list[int]) -> str:
    """'after stage 4', 'after stages 3 and 4'."""
    return f"after stage{'s' if len(stages) > 1 else ''} {joined([str(s) for s in stages])}"


class DefenseText(NamedTuple):
    """What a card says of one of the defenses FSR is compared with."""

    short: str  # as a sentence names it
    name: str  # in full
    hub_tag: str
    how: str  # how it works
    heads: bool  # auxiliary heads after each block, whose argmax picks the mask and whose CE joins the loss


DEFENSE_TEXT = {
    "cas": DefenseText(
        "CAS",
        "Channel-wise Activation Suppressing (CAS)",
        "channel-wise-activation-suppressing",
        "CAS scales each channel of the feature by the weight an auxiliary linear head on the pooled feature gives it "
        "for one class: the label's in training, the head's own prediction at test time.",
        True,
    ),
    "cifs": DefenseText(
        "CIFS",
        "Channel-wise Importance-based Feature Selection (CIFS)",
        "channel-wise-importance-based-feature-selection",
        "CIFS weights each channel of the feature by a softmax over the channels of the gradient of a probe's top two "
        "logits (the label and its second class in training, its own top two at test time).",
        True,
    ),
    "fd": DefenseText(
        "Feature Denoising",
        "Feature Denoising",
        "feature-denoising",
        "Feature Denoising adds a non-local means filter of the feature, through a 1x1 conv and BN, to the feature.",
        False,
    ),
}


def placement(config: dict, full: bool = False) -> str:
    """Where the network's FSR or other defense sits: 'with FSR after stage 4', 'with CAS after each block of stage
    4', 'with Feature Denoising after stages 1, 2, 3 and 4'; 'without FSR' for a plain network. `full`: the defense's
    full name."""
    if config.get("defense"):
        defense, where = DEFENSE_TEXT[config["defense"]], after_stages(config["defense_stages"])
        if defense.heads:  # after every residual block of the stage
            where = where.replace("after ", "after each block of ", 1)
        return f"with {defense.name if full else defense.short} {where}"
    stages = config.get("fsr_stages")
    return f"with FSR {after_stages(stages)}" if stages else "without FSR"
