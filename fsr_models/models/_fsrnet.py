"""The timm-style interface the three networks share (`FSRNet`), and the check of their inputs."""

# No `from __future__ import annotations` here: TorchScript reads FSRNet's class annotations and needs real types.
import warnings
from typing import Callable, Collection, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import create_classifier, get_device_dtype, register_notrace_function
from timm.models._features import feature_take_indices

from fsr_models.fsr import FSROutput
from fsr_models.fsr.fsr_core import FSR, FSRParts

# The head: what forward_head runs after the features.
HEAD_MODULES = ("pre_logits", "global_pool", "fc")


@torch.jit.unused  # eager only: a scripted network never calls it (checked_images skips it there)
def warn_unless_raw_pixels(x: torch.Tensor) -> None:
    """A warning for values far outside [0, 1] (pixels in 0-255, normalised images), which the networks never saw."""
    if x.numel() and x.device.type != "meta" and not torch.compiler.is_compiling():  # values to look at
        low, high = torch.aminmax(x.detach())
        if high > 1.5 or low < -0.5:
            warnings.warn(
                f"expected pixels in [0, 1], got values in [{low:.3g}, {high:.3g}]: divide 0-255 images by 255, "
                "and give images without normalisation (the network takes raw [0, 1] pixels)",
                stacklevel=4,
            )


@register_notrace_function  # torch.fx (timm's FX feature extraction) keeps the call, not its shape tests on proxies
def checked_images(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """`x`, or a clear error for what is not a batch of float NCHW images with `in_chans` channels. (Returning `x`
    keeps the call in FX graphs, which drop calls whose results nothing uses.)"""
    if not torch.jit.is_scripting():  # a scripted graph (of torch.fx) calls it too: TorchScript skips the tests
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor of images, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"expected images of shape (batch, {in_chans}, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != in_chans:
            raise ValueError(
                f"expected {in_chans} channels in dim 1 (NCHW), got shape {tuple(x.shape)}; "
                "channels-last images need x.permute(0, 3, 1, 2)"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"expected float pixels in [0, 1], got dtype {x.dtype}; convert uint8 with x.float() / 255"
            )
        warn_unless_raw_pixels(x)
    return x


class FSRNet(nn.Module):
    """The interface the three networks share, timm-style.

    `forward(x)` returns logits, in eager mode and under `torch.jit.script`. `forward(x, return_fsr=True)` (eager
    only) returns an `FSROutput` with the FSR parts the training losses need (call it through the DDP wrapper so
    gradient sync sees it). Subclasses set `weight_init`; build their feature layers, registered in execution
    order (`forward_intermediates`, `return_fsr` and timm's `features_only` run them in that order), then
    `pre_logits` (between pooling and classifier), calling `weight_init(self.modules())` at the end; set
    `num_features`, `in_chans`, `fsr_stages`, `backbone_args` (the architecture's own keyword arguments, for
    configs) and `feature_info` (per stage, the module whose output is its feature); call `reset_classifier` last;
    and implement `_forward_features(x)`, the same layers written out so that TorchScript can compile them.
    """

    num_classes: int
    num_features: int
    head_hidden_size: int
    in_chans: int
    drop_rate: float = 0.0  # dropout before the classifier (timm's `drop_rate`; the paper uses none)
    # The authors' initialisation for this backbone, applied to a module list: the network's layers at build time,
    # transformers' `_init_weights` and the auxiliary heads of `FSRLoss.for_model` use the same function.
    weight_init: Callable[[Iterable[nn.Module]], None]

    @staticmethod
    def _run(module: nn.Module, x: torch.Tensor, fsr_parts: list[FSRParts] | None) -> torch.Tensor:
        if fsr_parts is not None and isinstance(module, FSR):
            x, parts = module(x, return_parts=True)
            fsr_parts.append(parts)
            return x
        return module(x)

    def _stages(self) -> list[list[str]]:
        """The feature layers in execution (registration) order, cut after each feature_info module; the last list
        holds those after the last feature (VGG's last pool). A child holding feature_info modules is opened."""
        taps = [info["module"] for info in self.feature_info]
        names = []
        for name, child in self.named_children():
            if name in HEAD_MODULES:
                continue
            if any(tap.startswith(f"{name}.") for tap in taps):
                names += [f"{name}.{sub}" for sub, _ in child.named_children()]
            else:
                names.append(name)
        stages: list[list[str]] = [[]]
        for name in names:
            stages[-1].append(name)
            if name in taps:
                stages.append([])
        return stages

    def _forward_stages(
        self,
        x: torch.Tensor,
        take_indices: Collection[int] = (),
        stop_index: int | None = None,
        fsr_parts: list[FSRParts] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature layers (through stage `stop_index` if given): the last output and the features of the stages
        in `take_indices`; the parts of each FSR module are appended to `fsr_parts` if given."""
        stages = self._stages()
        intermediates = []
        for i, names in enumerate(stages if stop_index is None else stages[: stop_index + 1]):
            for name in names:
                x = self._run(self.get_submodule(name), x, fsr_parts)
            if i in take_indices:
                intermediates.append(x)
        return x, intermediates

    def _forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_features(checked_images(x, self.in_chans))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """`forward_features(x)` and the features of the stages in `indices` (of feature_info: None all, an int the
        last n): each stage's feature_info module's output, so FSR's output where the stage ends with FSR.

        `norm` has nothing to apply (no norm follows the last stage); `stop_early` stops after the last stage taken,
        whose feature is then also the first value returned.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        x = checked_images(x, self.in_chans)
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        x, intermediates = self._forward_stages(x, take_indices, max_index if stop_early else None)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Remove the layers that the features of `indices` do not need; returns their indices for
        `forward_intermediates`. Layers after the last feature kept (VGG's last pool) go with the head, which goes
        whenever later stages do (it is sized for the final features). `prune_norm` has no norm to remove."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        prune_end = max_index < len(self.feature_info) - 1
        if prune_end or prune_head:
            for names in self._stages()[max_index + 1 :]:
                for name in names:
                    self.set_submodule(name, nn.Identity().train(self.training))  # _forward_features still calls it
            if prune_end:
                self.num_features = self.feature_info[max_index]["num_chs"]
            self.pre_logits = nn.Identity().train(self.training)  # VGG's MLP is sized for the final features
            self.reset_classifier(0, "")
        return take_indices

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(self.global_pool(x))
        if pre_logits:
            return x
        if self.drop_rate:
            x = F.dropout(x, self.drop_rate, self.training)
        return self.fc(x)

    def forward(self, x: torch.Tensor, return_fsr: bool = False):
        if isinstance(return_fsr, bool) and return_fsr:  # under torch.fx tracing the flag is a Proxy: logits
            if torch.jit.is_scripting():
                raise RuntimeError("return_fsr=True is for training in eager mode: a scripted network returns logits")
            return self._forward_fsr(x)
        return self.forward_head(self.forward_features(x))

    def _forward_fsr(self, x: torch.Tensor) -> FSROutput:
        x = checked_images(x, self.in_chans)
        fsr_parts: list[FSRParts] = []
        features, _ = self._forward_stages(x, fsr_parts=fsr_parts)
        return FSROutput(self.forward_head(features), tuple(fsr_parts))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier with `num_classes` outputs (0: none). `global_pool` None keeps the current pooling, or
        pools with 'avg' when an unpooled network (global_pool='') gets classes again."""
        if global_pool is None:
            global_pool = self.global_pool.pool_type or ("avg" if num_classes else "")
        pool, fc = create_classifier(self.num_features, num_classes, pool_type=global_pool, **get_device_dtype(self))
        # An AssertionError, as timm's heads give for pooling they cannot take
        assert pool.feat_mult() == 1 or isinstance(self.pre_logits, nn.Identity), (
            f"{type(self).__name__}'s pre-logits MLP takes {self.num_features} features: global_pool={global_pool!r}, "
            "which changes the pooled width, is not supported"
        )
        self.num_classes = num_classes
        self.global_pool, self.fc = pool.train(self.training), fc.train(self.training)
        self.head_hidden_size = self.num_features * pool.feat_mult()

    def fsr_modules(self) -> list[FSR]:
        return [m for m in self.modules() if isinstance(m, FSR)]

    def set_fsr_output(self, output: str) -> None:
        """Pass on another FSR feature (f_tilde, f_pos, f_neg, f_neg_recal) in every FSR module (Table 5)."""
        for m in self.fsr_modules():
            m.output = output

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Refuse weights that do not fit this architecture with a ValueError that names them."""
        check_weights_fit(self, state_dict, strict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def check_weights_fit(model: nn.Module, state_dict, strict: bool) -> None:
    """A ValueError naming the tensors of `state_dict` whose shapes differ from `model`'s, or (strict) that it lacks
    or adds, so that weights of another architecture or FSR setting never load half-way."""
    own = model.state_dict()
    name = type(model).__name__
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if mismatched:
        raise ValueError(
            f"weights do not fit {name} (num_classes={model.num_classes}): "
            + "; ".join(mismatched[:5])
            + ("; ..." if len(mismatched) > 5 else "")
            + ". Build the model with the checkpoint's config (num_classes, FSR settings) and load into that."
        )
    if strict:
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"weights do not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}. "
                "Was the checkpoint made for another architecture or FSR setting?"
            )
