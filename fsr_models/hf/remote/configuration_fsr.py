"""Configuration of an fsr-zoo network, for loading it without the fsr-zoo package.

This file, `modeling_fsr.py`, `image_processing_fsr.py` and the package's `fsr_core.py` ship in the model's Hub
repository, so that

    AutoModelForImageClassification.from_pretrained(repo_id, trust_remote_code=True)

works with torch and transformers alone. Where the fsr_models package is imported, transformers uses the classes it
registers instead (timm models, training support); the two compute the same logits from the same weights.
"""

from transformers import PretrainedConfig

from .fsr_core import PAPER_FSR_STAGES, check_fsr_config

# The defenses FSR is compared with, in ResNet-18 only, and the stages the zoo's resnet18_<defense> places each after.
DEFENSE_STAGES = {"cas": (4,), "cifs": (4,), "fd": (1, 2, 3, 4)}


class FSRConfig(PretrainedConfig):
    r"""Configuration of an FSR zoo network.

    Args:
        backbone: `"resnet18"`, `"vgg16"` or `"wrn34_10"`.
        fsr_stages: the stages followed by an FSR module (`[]`: the plain network; `None`: the paper's position).
        backbone_args: the backbone's own arguments (`layers` / `widths`, `stages`, `depth` / `widen_factor`,
            `in_chans`); `None` is the paper's network.
        fsr_tau: temperature of the mask; fsr_separation / fsr_recalibration: whether the two stages exist;
        fsr_output: the feature FSR passes on (`"f_tilde"` is the paper's).
        defense: in place of FSR (fsr_stages `[]` or `None`), `"cas"`, `"cifs"` or `"fd"`: a ResNet-18 with CAS,
            CIFS or Feature Denoising;
        defense_stages: the stages it follows (`None`: the zoo's position, DEFENSE_STAGES).

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
        defense: str | None = None,
        defense_stages: list[int] | None = None,
        **kwargs,
    ):
        check_fsr_config(backbone, fsr_tau, fsr_output)
        if defense is not None:
            if defense not in DEFENSE_STAGES or backbone != "resnet18" or fsr_stages:
                raise ValueError(
                    f"FSRConfig.defense must be one of {sorted(DEFENSE_STAGES)}, in resnet18 without FSR: got "
                    f"{defense!r} in {backbone} with fsr_stages {fsr_stages}"
                )
            fsr_stages = []  # the network has the defense in place of FSR
        self.backbone = backbone
        self.fsr_stages = list(PAPER_FSR_STAGES[backbone] if fsr_stages is None else fsr_stages)
        self.backbone_args = backbone_args
        self.fsr_tau = fsr_tau
        self.fsr_separation = fsr_separation
        self.fsr_recalibration = fsr_recalibration
        self.fsr_output = fsr_output
        self.defense = defense
        self.defense_stages = defense_stages
        super().__init__(**kwargs)
