"""What the three networks share: pretrained cfgs for the paper's settings and the timm-style interface."""
# No `from __future__ import annotations` here: TorchScript reads FSRNet's class annotations and needs real types.
import math
from typing import Callable, Collection, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import create_classifier, get_device_dtype, register_notrace_function
from timm.models import build_model_with_cfg, resolve_pretrained_cfg
from timm.models._features import feature_take_indices

from ..fsr import FSR, FSROutput, FSRParts

# The Hub organisation that holds every published checkpoint; repositories are named "<arch>.<tag>".
HF_ORG = "fsr-zoo"

# "<arch>.<tag>" entries whose weights really exist on the Hub. A tag gets a weight source (hf_hub_id) only
# when it is listed here; every other tag fails loudly under pretrained=True.
PUBLISHED: frozenset[str] = frozenset()

CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SVHN_LABELS = tuple(str(d) for d in range(10))  # torchvision's SVHN maps the digit 0 to label 0
CIFAR100_LABELS = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree",
    "wolf", "woman", "worm",
)  # fmt: skip

# data set -> (num_classes, label_names, input_size). Tiny ImageNet's label names are the WordNet ids of the
# copy it is trained on; they are written into a checkpoint's config when it is trained, not guessed here.
DATASETS = {
    "cifar10": (10, CIFAR10_LABELS, (3, 32, 32)),
    "svhn": (10, SVHN_LABELS, (3, 32, 32)),
    "cifar100": (100, CIFAR100_LABELS, (3, 32, 32)),
    "tiny_imagenet": (200, None, (3, 64, 64)),
}
# The paper's settings (Sec. 4.1, Tables 1-2, supplementary): every method on CIFAR-10 and SVHN, AT elsewhere.
PAPER_TAGS = tuple(f"{method}_{data}" for data in ("cifar10", "svhn") for method in ("at", "trades", "mart")) + (
    "at_cifar100",
    "at_tiny_imagenet",
)


def _cfg(arch: str, tag: str, reduction: int, **kwargs) -> dict:
    num_classes, label_names, input_size = DATASETS[tag.split("_", 1)[1]]
    name = f"{arch}.{tag}"
    return {
        "hf_hub_id": f"{HF_ORG}/{name}" if name in PUBLISHED else None,
        "num_classes": num_classes,
        "label_names": label_names,
        "input_size": input_size,
        "pool_size": (input_size[1] // reduction, input_size[2] // reduction),  # forward_features' map at input_size
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": (0.0, 0.0, 0.0),  # the models take [0, 1] pixels: the data config must pass them through
        "std": (1.0, 1.0, 1.0),
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "mit",
        "paper_ids": "arXiv:2303.13846",
        "paper_name": "Feature Separation and Recalibration for Adversarial Robustness",
        "origin_url": "https://github.com/wkim97/FSR",
        **kwargs,
    }


def paper_cfgs(arch: str, reduction: int, **kwargs) -> dict[str, dict]:
    """One cfg per paper setting, "arch.tag" -> cfg, for `generate_default_cfgs`; `reduction` is the stride of
    `forward_features`' output."""
    return {f"{arch}.{tag}": _cfg(arch, tag, reduction, **kwargs) for tag in PAPER_TAGS}


def check_pretrained_available(variant: str, pretrained: bool, kwargs: dict) -> None:
    """Fail before building when pretrained weights are asked for and none exist (timm would say less)."""
    if not pretrained:
        return
    cfg = resolve_pretrained_cfg(
        variant, pretrained_cfg=kwargs.get("pretrained_cfg"), pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay")
    )
    if not (cfg.has_weights or cfg.state_dict is not None or cfg.source == "local-dir"):
        published = sorted(p for p in PUBLISHED if p.startswith(f"{variant}.")) or "none yet"
        raise RuntimeError(
            f"No pretrained weights are published for {variant}.{cfg.tag}; tags of {variant} with weights: "
            f"{published}. Use pretrained=False for random init, or load a saved folder with "
            f"pretrained_cfg_overlay=dict(file='<folder>/model.safetensors') or 'local-dir:<folder>'."
        )


def build_fsr(channels: int, device=None, dtype=None, **kwargs) -> FSR:
    """An FSR module (`kwargs`: FSR's) on timm's `device` / `dtype`: FSR takes neither, so it is moved there."""
    return FSR(channels, **kwargs).to(device=device, dtype=dtype)


# The head: what forward_head runs after the features.
HEAD_MODULES = ("pre_logits", "global_pool", "fc")


def build_network(cls: type, variant: str, pretrained: bool, **kwargs) -> nn.Module:
    """timm's `build_model_with_cfg` for a zoo network, after `check_pretrained_available`. The weights of a
    `local-dir:` folder are read whole by `fsr_models.hub.read_weights` (timm 1.0.31 reads one safetensors file of a
    folder: the first shard of a sharded one), and no copy of the weights stays in the model's pretrained_cfg."""
    check_pretrained_available(variant, pretrained, kwargs)
    cfg = kwargs.get("pretrained_cfg")
    if pretrained and isinstance(cfg, dict) and cfg.get("source") == "local-dir":
        from ..hub import read_weights  # fsr_models.hub imports this package: import on use

        kwargs["pretrained_cfg"] = {**cfg, "source": None, "state_dict": read_weights(cfg["file"])}
    model = build_model_with_cfg(cls, variant, pretrained, **kwargs)
    model.pretrained_cfg.pop("state_dict", None)  # loaded into the network by now
    return model


@register_notrace_function  # torch.fx (timm's FX feature extraction) keeps the call, not its shape tests on proxies
def check_images(x: torch.Tensor, in_chans: int) -> torch.Tensor:
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
        return self._forward_features(check_images(x, self.in_chans))

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
        x = check_images(x, self.in_chans)
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
        x = check_images(x, self.in_chans)
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
        own = self.state_dict()
        mismatched = [
            f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in state_dict.items()
            if k in own and tuple(v.shape) != tuple(own[k].shape)
        ]
        if mismatched:
            raise ValueError(
                f"weights do not fit {type(self).__name__} (num_classes={self.num_classes}): "
                + "; ".join(mismatched[:5])
                + ("; ..." if len(mismatched) > 5 else "")
                + ". Build the model with the checkpoint's config (num_classes, FSR settings) and load into that."
            )
        if strict:
            missing = sorted(set(own) - set(state_dict))
            unexpected = sorted(set(state_dict) - set(own))
            if missing or unexpected:
                raise ValueError(
                    f"weights do not fit {type(self).__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}. "
                    "Was the checkpoint made for another architecture or FSR setting?"
                )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def init_pytorch_default(modules: Iterable[nn.Module]) -> None:
    """PyTorch's own initialisation (Kaiming-uniform, a = sqrt(5), for conv and linear weights; uniform biases within
    1/sqrt(fan_in); unit BN): the authors' ResNet-18 has no init code and keeps it. Written out rather than through
    `reset_parameters()` so that BN running statistics stay untouched and every draw goes through `nn.init.*`."""
    for m in modules:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
            if m.bias is not None:
                bound = 1 / math.sqrt(nn.init._calculate_fan_in_and_fan_out(m.weight)[0])
                nn.init.uniform_(m.bias, -bound, bound)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_vgg(modules: Iterable[nn.Module]) -> None:
    """The authors' VGG16 (`vgg_fsr.py`): Kaiming-normal fan-out convs, unit BN, N(0, 0.01) linears, zero biases."""
    for m in modules:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)


def init_wide_resnet(modules: Iterable[nn.Module]) -> None:
    """The authors' WRN-34-10 (`wideresnet34_fsr.py`, from TRADES): convs N(0, sqrt(2 / (k * k * out_channels))),
    unit BN, linears with PyTorch's default weight and a zero bias."""
    for m in modules:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # the same N(0, 2 / (k*k*out))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
            nn.init.zeros_(m.bias)
