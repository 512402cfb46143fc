"""transformers model classes of the FSR zoo.

`FSRForImageClassification` holds the timm network as `self.model`, its `base_model_prefix`. Its checkpoints are
saved with the network's own keys, without the `model.` prefix (transformers adds a base model's prefix on load), so
one `model.safetensors` loads into timm and transformers alike; nothing is registered in transformers' own tables.
"""

from __future__ import annotations

import timm
import torch
from safetensors import SafetensorError
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from fsr_models.fsr.fsr_core import warn_unless_input_size
from fsr_models.hf.configuration_fsr import FSRConfig
from fsr_models.hf.image_processing_fsr import image_processor


class FSRPreTrainedModel(PreTrainedModel):
    config: FSRConfig
    config_class = FSRConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def _init_weights(self, module: torch.nn.Module) -> None:
        # transformers' default would redraw convs from N(0, 0.02); keep the authors' init of this backbone.
        self.model.weight_init([module])

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' loader, safetensors only, refusing weights that miss or add tensors (random init of a
        missing part would go unnoticed); a new head through `ignore_mismatched_sizes=True` stays allowed."""
        kwargs.setdefault("use_safetensors", True)  # never unpickle a downloaded checkpoint
        wants_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        except SafetensorError as e:
            source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
            raise ValueError(
                f"{source}: a weights file is not valid safetensors ({e}); it may be truncated. Download "
                "it again (force_download=True) or save it again."
            ) from e
        if info["missing_keys"] or info["unexpected_keys"]:
            raise ValueError(
                f"weights do not fit {model.config.timm_architecture} as configured: missing "
                f"{sorted(info['missing_keys'])[:5]}, unexpected {sorted(info['unexpected_keys'])[:5]}. "
                "Is config.json the one saved with these weights?"
            )
        return (model, info) if wants_info else model

    def save_pretrained(self, save_directory, *args, state_dict=None, **kwargs):
        """transformers' save, in the zoo's layout: the network's own keys (timm's layout; the registered mapping
        re-adds `model.` on load) and the image processor's `preprocessor_config.json`, so that every saved folder
        (and `push_to_hub`, which saves through here) works in `pipeline("image-classification")`."""
        # Trainer and Accelerate pass this model's state_dict(), whose keys carry the `model.` prefix.
        state_dict = self.model.state_dict() if state_dict is None else state_dict
        state_dict = {k.removeprefix(f"{self.base_model_prefix}."): v for k, v in state_dict.items()}
        result = super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)
        if kwargs.get("is_main_process", True):
            image_processor(self.config).save_pretrained(save_directory)
        return result


class FSRForImageClassification(FSRPreTrainedModel):
    """An FSR zoo network as a transformers image classifier: [0, 1] pixels in, `ImageClassifierOutput` out.

    With `labels`, `loss` is the cross-entropy of the logits. Adversarial training with the FSR losses is the job
    of `fsr_models.FSRLoss` and the training script; `self.model(x, return_fsr=True)` gives what they need.
    """

    def __init__(self, config: FSRConfig):
        super().__init__(config)
        labels = [config.id2label[i] for i in sorted(config.id2label)]
        pretrained_cfg = {**config.pretrained_cfg, "num_classes": config.num_labels, "label_names": labels}
        self.model = timm.create_model(
            config.timm_architecture,
            pretrained=False,
            pretrained_cfg=pretrained_cfg,
            num_classes=config.num_labels,
            **config.timm_model_args,
        )
        self.post_init()

    @classmethod
    def from_timm_model(cls, model: torch.nn.Module, **config_fields) -> "FSRForImageClassification":
        """Wrap a zoo network built by timm, with its weights, e.g. to `save_pretrained` or `push_to_hub` it."""
        hf_model = cls(FSRConfig.from_timm_model(model, **config_fields))
        hf_model.model.load_state_dict(model.state_dict())
        return hf_model.train(model.training)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch, 3, H, W)`): RGB pixels in [0, 1] (no normalisation).
        labels (`torch.LongTensor` of shape `(batch,)`, *optional*): class indices for the cross-entropy loss.
        output_hidden_states (`bool`, *optional*): also return the final feature map (after FSR), unpooled.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        warn_unless_input_size(pixel_values, self.config)
        features = self.model.forward_features(pixel_values)
        logits = self.model.forward_head(features)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        hidden_states = (features,) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (loss, logits, hidden_states) if v is not None)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)
