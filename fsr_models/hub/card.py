"""Model cards, written from what a run recorded and measured, never by hand: `model_card` renders a Hub
repository's card from a `Record` (`records`), with the sections of `naming`, `measured_text` and `training_text`
that `hub/zoo_card.py` reuses for the zoo's documents, and the loading snippet and limits written here.
"""

from __future__ import annotations

from huggingface_hub import ModelCard, ModelCardData

from fsr_models.evaluation.report import eps_text
from fsr_models.facts.datasets import DATASETS
from fsr_models.facts.paper import PAPER_CITATION
from fsr_models.hub.measured_text import comparison_lines, headline_lines, measured_lines
from fsr_models.hub.naming import DEFENSE_TEXT, deviations, network_name, placement
from fsr_models.hub.records import Record
from fsr_models.hub.training_text import training_lines
from fsr_models.hub.weight_files import FSR_HEADS_NAME


def use_lines(timm_name: str, hf_name: str, input_size, remote_code: bool) -> list[str]:
    """How the model loads in timm, transformers and the pipeline (and without fsr-zoo, where the repository carries
    its own code); the snippet runs as it is."""
    channels, height, width = input_size
    remote = [
        "",
        "# without fsr-zoo (torch and transformers only) the repository's own code gives the same logits",
        f'model = AutoModelForImageClassification.from_pretrained("{hf_name}", trust_remote_code=True)',
    ]
    return [
        "```python",
        "import torch",
        "import fsr_models  # registers the architectures with timm and transformers",
        "import timm",
        "from transformers import AutoModelForImageClassification, pipeline",
        "",
        f"images = torch.rand(8, {channels}, {height}, {width})  # RGB pixels in [0, 1], no normalisation",
        "# timm's create_model returns train mode: eval() before classifying",
        f'model = timm.create_model("{timm_name}", pretrained=True).eval()',
        "logits = model(images)",
        "",
        "# transformers returns eval mode; the pipeline takes PIL images and gives label names",
        f'hf_model = AutoModelForImageClassification.from_pretrained("{hf_name}")',
        "logits = hf_model(pixel_values=images).logits",
        f'classify = pipeline("image-classification", model="{hf_name}")',
        *(remote if remote_code else []),
        "```",
        "",
    ]


MASKS_CHOSEN_BY_ARGMAX = (
    "Its masks are chosen by an argmax over an auxiliary prediction, which passes no gradient, so PGD on the logits "
    "alone can overstate its robustness: the adaptive evaluation (`--attacks adaptive`) attacks the masks too."
)


def limits_lines(
    threat_model: str, credit: str = "the FSR method is Kim et al.'s (CVPR 2023): cite their paper when you use it"
) -> list[str]:
    """The card's limits and citation; `credit` says whose method the network carries and what to cite."""
    return [
        f"Research weights for studying adversarial robustness. Their robustness holds only in the threat model "
        f"they were trained and measured for, {threat_model}. It is not certified, it says nothing about other "
        "norms, larger budgets, patches, corruptions or other data, and stronger or adaptive attacks may lower the "
        "figures measured here. Inputs are [0, 1] pixels without normalisation (the image processor does that for "
        f"the pipeline). The code and weights are under the MIT licence; {credit}.",
        "",
        "```bibtex",
        PAPER_CITATION,
        "```",
        "",
    ]


def model_card(record: Record, repo_id: str) -> ModelCard:
    """The card of one Hub repository: metadata (with every measured result) and what a user needs to know."""
    eval_results = record.eval_results  # a ValueError without the final test
    config, test, dataset = record.config, record.metrics["test"], DATASETS[record.run["dataset"]]
    defense = DEFENSE_TEXT[config["defense"]] if config.get("defense") else None
    data = ModelCardData(
        library_name="timm",
        license="mit",
        pipeline_tag="image-classification",
        datasets=[dataset.hub_id],
        tags=[
            "image-classification",
            "timm",
            "transformers",
            "safetensors",
            "adversarial-robustness",
            "adversarial-training",
            defense.hub_tag if defense else "feature-separation-and-recalibration",
        ],
        model_name=repo_id,
        eval_results=eval_results,
    )
    stages, tag = config.get("fsr_stages"), config["pretrained_cfg"].get("tag", "")
    _, height, width = config["pretrained_cfg"]["input_size"]
    cfg = config["pretrained_cfg"]
    if defense:
        paper = f'"{cfg["paper_name"]}" ({cfg["paper_ids"]})'  # the defense's paper, from its timm config
        where = f"{placement(config, full=True)} of the backbone"
        method = f"{defense.short} is from {paper}, code {cfg['origin_url']}"
    else:
        where = f"{placement(config)} of the backbone" if stages else "without FSR (the paper's baseline)"
        method = "FSR is Feature Separation and Recalibration (Kim et al., CVPR 2023)"
    natural = record.train.get("method") == "natural"
    trained = "trained without adversarial examples, measured against" if natural else "adversarially trained to resist"
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A {network_name(config)} image classifier for {dataset.name} ({config['num_classes']} classes, "
        f"{height}x{width} inputs in [0, 1]) {where}, {trained} L-inf attacks "
        f"of eps {eps_text(test['eps'])}: timm architecture `{config['architecture']}`, tag `{tag}` of fsr-zoo. "
        f"{method}.",
        "",
    ]
    if differs := deviations(record):
        lines += [f"**Not the paper's setting of `{record.name}`:**", "", *(f"- {t}" for _, t in differs), ""]
    lines += headline_lines(record)
    if stages:
        heads = f" (the trained ones are in `{FSR_HEADS_NAME}`, for fine-tuning)" if record.fsr_heads else ""
        lines += [
            "FSR splits the feature map with a learned mask into robust and non-robust activations (Separation) and "
            "adjusts the non-robust ones to carry useful cues again (Recalibration); the sum replaces the feature "
            f"map. The auxiliary heads that train the mask are not part of the network{heads}.",
            "",
        ]
    if defense:
        masks = f" {MASKS_CHOSEN_BY_ARGMAX}" if defense.heads else ""
        lines += [
            f"{defense.how} fsr-zoo has it as one of the feature-level defenses that FSR (Kim et al., CVPR 2023) is "
            f"compared with in its Table 4.{masks}",
            "",
        ]
    lines += ["## Training", "", *training_lines(record), "## Evaluation", ""]
    lines += measured_lines(record, f"hf-hub:{repo_id}")
    if record.comparison:
        arch, other_tag = record.comparison["model"].split(".", 1)
        named = {"architecture": arch, "pretrained_cfg": {"tag": other_tag}}
        reports = (record.comparison.get("robustness"), record.comparison.get("adaptive"))
        other = Record(named, record.comparison["metrics"], *reports)
        lines += [
            f"## Compared with {'the plain baseline' if stages or defense else 'the same network with FSR'}",
            "",
            "Measured the same way (accuracy %, test images in brackets):",
            "",
            *comparison_lines(record, other),
        ]
    lines += ["## Use", "", *use_lines(f"hf-hub:{repo_id}", repo_id, config["pretrained_cfg"]["input_size"], True)]
    threat = f"L-inf perturbations of at most {eps_text(test['eps'])} on {dataset.name}-like {height}x{width} images"
    if defense:
        credit = (
            f"the {defense.short} method is that of {paper}: cite that paper when you use it, and FSR's, whose Table 4 "
            "compares the two"
        )
        limits = limits_lines(threat, credit)
    else:
        limits = limits_lines(threat)
    lines += ["## Intended use, limits and citation", "", *limits]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n" + "\n".join(lines))
