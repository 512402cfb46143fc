"""Configuration of an fsr-zoo network, for loading it without the fsr-zoo package.

This file, `modeling_fsr.py`, `image_processing_fsr.py` and the package's `fsr_core.py` ship in the model's Hub
repository, so that

    AutoModelForImageClassification.from_pretrained(repo_id, trust_remote_code=True)

works with torch and transformers alone. Where the fsr_models package is imported, transformers uses the classes it
registers instead (timm models, training support); the two compute the same logits from the same weights.
"""

from transformers import PretrainedConfig

from .fsr_core import PAPER_FSR_STAGES, check_fsr_config


class FSRConfig(PretrainedConfig):
    r"""Configuration of an FSR zoo network.

    Args:
        backbone: `"resnet18"`, `"vgg16"` or `"wrn34_10"`.
        fsr_stages: the stages followed by an FSR module (`[]`: the plain network; `None`: the paper's position).
        backbone_args: the backbone's own arguments (`layers` / `widths`, `stages`, `depth` / `widen_factor`,
            `in_chans`); `None` is the paper's network.
        fsr_tau: temperature of the mask; fsr_separation / fsr_recalibration: whether the two stages exist;
        fsr_output: the feature FSR passes on (`"f_tilde"` is the paper's).

    Other keys of the saved `config.json` (the training losses' weights, timm's keys) are kept as they are.
    """

    model_type = "fsr"

    def __init__(
        self,
        backbone: str = "resnet18",
        fsr_stages: list[int] | None = None,
        backbone_args: dict | None = None,
        fsr_tau: float = 0.1,
        fsr_separation: bool = True,
        fsr_recalibration: bool = True,
        fsr_output: str = "f_tilde",
        **kwargs,
    ):
        check_fsr_config(backbone, fsr_tau, fsr_output)
        self.backbone = backbone
        self.fsr_stages = list(PAPER_FSR_STAGES[backbone] if fsr_stages is None else fsr_stages)
        self.backbone_args = backbone_args
        self.fsr_tau = fsr_tau
        self.fsr_separation = fsr_separation
        self.fsr_recalibration = fsr_recalibration
        self.fsr_output = fsr_output
        super().__init__(**kwargs)
