"""The networks as timm models: sizes (paper Table 7), registration and cfgs, the timm interface, FSR behaviour."""

import math
import warnings

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import SHIPPED_FSR
from torch.utils.flop_counter import FlopCounterMode

import fsr_models
from fsr_models import FSRLoss, FSROutput
from fsr_models.data import load_cifar10
from fsr_models.facts.datasets import tag_dataset
from fsr_models.facts.networks import RECIPE_TAGS

ALL = [name for pair in fsr_models.ARCHITECTURES.values() for name in pair] + [
    "resnet18_cas",
    "resnet18_cifs",
    "resnet18_fd",
]
SMALL_WRN = dict(widen_factor=1)  # tests of mechanics use WRN-34-1; sizes are checked at full width


def build(name, **kwargs):
    return timm.create_model(name, **({**SMALL_WRN, **kwargs} if name.startswith("wrn") else kwargs))


def gflops(model):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.rand(1, 3, 32, 32))
    return counter.get_total_flops() / 1e9


def params_m(*modules):
    return sum(p.numel() for m in modules for p in m.parameters()) / 1e6


# (params M with the aux head, GFLOPs of convs and linears). Paper Table 7: ResNet-18 11.17 / 12.43 M,
# 1.1133 / 1.1535 G; VGG16 15.25 / 16.52 M, 0.6299 / 0.6701 G. The paper's FLOPs also count the elementwise
# operations of BN and ReLU, which these do not; FSR's own cost, 0.0402 G in the paper, is 0.0401 G of convs and
# linears.
TABLE7 = {
    "resnet18_plain": (11.17, 1.1108),
    "resnet18_fsr": (12.43, 1.1510),
    "vgg16_plain": (15.25, 0.6275),
    "vgg16_fsr": (16.51, 0.6676),  # the paper prints 16.52; the authors' VGG code gives the same 16.51 M as ours
    "wrn34_10_plain": (46.16, 13.3178),
    "wrn34_10_fsr": (47.72, 13.5160),
}


@pytest.mark.parametrize("name", TABLE7)  # the defenses' sizes: tests/test_defenses.py
def test_parameter_count_and_flops_match_table7(name):
    model = timm.create_model(name)
    modules = [model, FSRLoss.for_model(model)] if model.fsr_modules() else [model]
    params, flops = TABLE7[name]
    assert round(params_m(*modules), 2) == params
    assert round(gflops(model), 4) == flops


def test_fsr_adds_the_papers_overhead():
    resnet_fsr, resnet = timm.create_model("resnet18_fsr"), timm.create_model("resnet18_plain")
    added = params_m(resnet_fsr, FSRLoss.for_model(resnet_fsr)) - params_m(resnet)
    assert round(added, 3) == 1.259  # S + R + h at 512 channels
    # 0.04011 G of S and R convs; the paper's 0.0402 also counts their BN/ReLU and the mask's products
    assert gflops(resnet_fsr) - gflops(resnet) == pytest.approx(0.0402, abs=1e-4)
    # Table 7's totals within 0.4 % (their FLOPs include BN/ReLU elements)
    assert gflops(resnet_fsr) == pytest.approx(1.1535, rel=4e-3)
    assert gflops(timm.create_model("vgg16_fsr")) == pytest.approx(0.6701, rel=4e-3)


def test_registered_names_and_paper_tags():
    assert set(timm.list_models("*_fsr")) >= {"resnet18_fsr", "vgg16_fsr", "wrn34_10_fsr"}
    for name in ALL:
        tags = {t.split(".")[1] for t in timm.list_models(name, include_tags=True) if "." in t}
        recipes = set(RECIPE_TAGS.get(name.rsplit("_", 1)[0], ()))  # weights trained here with another recipe
        assert tags == (set(fsr_models.PAPER_TAGS) | recipes if name in TABLE7 else {"at_cifar10"}), name  # Table 4's
    assert "vgg16_plain.at_nfgsm_15ep_cifar10" in timm.list_models("vgg16_plain", include_tags=True)
    assert [tag_dataset(t) for t in ("at_nfgsm_15ep_cifar10", "at_cifar100", "mart_svhn")] == [
        "cifar10",
        "cifar100",
        "svhn",
    ]
    with pytest.raises(ValueError, match="does not end with a data set's name"):
        tag_dataset("at_nfgsm_15ep")
    cfg = timm.create_model("resnet18_fsr.trades_svhn").pretrained_cfg
    assert cfg["num_classes"] == 10 and cfg["label_names"][0] == "0" and cfg["input_size"] == (3, 32, 32)
    assert cfg["mean"] == (0.0, 0.0, 0.0) and cfg["std"] == (1.0, 1.0, 1.0)  # [0, 1] pixels pass through
    assert cfg["license"] == "mit" and cfg["paper_ids"] == "arXiv:2303.13846"
    data_cfg = timm.data.resolve_data_config({}, model=timm.create_model("vgg16_fsr"))
    assert data_cfg["mean"] == (0.0, 0.0, 0.0) and data_cfg["input_size"] == (3, 32, 32)


@pytest.mark.parametrize(
    "tag,classes,size", [("at_cifar10", 10, 32), ("at_cifar100", 100, 32), ("at_tiny_imagenet", 200, 64)]
)
def test_tags_set_the_number_of_classes(tag, classes, size):
    model = build(f"wrn34_10_fsr.{tag}").eval()
    assert model(torch.rand(2, 3, size, size)).shape == (2, classes)
    labels = model.pretrained_cfg.get("label_names")  # Tiny ImageNet's come from the copy it is trained on
    assert labels is None if tag == "at_tiny_imagenet" else len(labels) == classes


def test_every_tag_names_its_hub_repository_and_asks_it_for_safetensors_only():
    cfgs = {name: timm.models.get_pretrained_cfg(name) for name in timm.list_models("*_fsr", include_tags=True)}
    assert len(cfgs) == 3 * len(fsr_models.PAPER_TAGS) + sum(len(tags) for tags in RECIPE_TAGS.values())
    for name, cfg in cfgs.items():
        assert cfg.hf_hub_id == f"fsr-zoo/{name}" and cfg.hf_hub_filename == "model.safetensors"


def test_pretrained_weights_that_cannot_be_had_fail_with_what_loads_instead():
    # the tests' Hub is unreachable and the cache empty: the error says so and names the loaders that work
    with pytest.raises(RuntimeError) as error:
        timm.create_model("vgg16_plain.mart_cifar10", pretrained=True)
    assert str(error.value).startswith(
        "vgg16_plain.mart_cifar10 has no pretrained weights in the local cache, and the Hub, where they would be if "
        "uploaded, cannot be reached (no network, or HF_HUB_OFFLINE is set) (fsr-zoo/vgg16_plain.mart_cifar10)"
    )
    assert "timm.create_model('local-dir:<folder>', pretrained=True)" in str(error.value)
    with pytest.raises(RuntimeError, match="fsr_attached has no weights published on the Hub yet"):
        timm.create_model("fsr_attached", pretrained=True)  # no tag of it has weights: refused before any download
    model = timm.create_model(f"local-dir:{SHIPPED_FSR}", pretrained=True)  # which works
    assert model.pretrained_cfg["tag"] == "at_cifar10"


@pytest.mark.parametrize("name", ALL)
def test_timm_interface(name):
    model = build(name).eval()
    x = torch.rand(2, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape[:2] == (2, model.num_features)
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    torch.testing.assert_close(model.forward_head(features), model(x))

    extractor = build(name, features_only=True).eval()
    maps = extractor(x)
    assert [m.shape[1] for m in maps] == extractor.feature_info.channels()
    assert [32 // m.shape[-1] for m in maps] == extractor.feature_info.reduction()

    model.reset_classifier(0, "")
    torch.testing.assert_close(model(x), model.forward_head(features) if name.startswith("vgg") else features)
    assert model(x).ndim == 4
    model.reset_classifier(100)
    assert model(x).shape == (2, 100) and model.get_classifier().out_features == 100 and model.num_classes == 100


@pytest.mark.parametrize("name", ALL)
def test_plain_forward_backward_leaves_no_parameter_without_gradient(name):
    model = build(name).train()
    F.cross_entropy(model(torch.rand(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    # CAS's and CIFS's auxiliary heads' biases change their logits only: their joint loss trains them
    assert [n for n, p in model.named_parameters() if p.grad is None and not n.endswith(".defense.fc.bias")] == []


@pytest.mark.parametrize("name", ["resnet18_fsr", "vgg16_fsr", "wrn34_10_fsr"])
def test_fsr_training_step_reaches_every_parameter(name):
    model = build(name).train()
    fsr_loss = FSRLoss.for_model(model)
    target = torch.tensor([0, 1, 2, 3])
    out = model(torch.rand(4, 3, 32, 32), return_fsr=True)
    assert isinstance(out, FSROutput) and len(out.fsr_parts) == 1
    (F.cross_entropy(out.logits, target) + fsr_loss(out, target)).backward()
    missing = [n for m in (model, fsr_loss) for n, p in m.named_parameters() if p.grad is None]
    assert missing == []


@pytest.mark.parametrize("name", ["resnet18_fsr", "vgg16_fsr", "wrn34_10_fsr"])
def test_eval_is_deterministic_and_train_is_stochastic(name):
    model = build(name)
    x = torch.rand(3, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))
    assert torch.equal(model(x, return_fsr=True).logits, model(x))
    model.train()
    masks = [model(x, return_fsr=True).fsr_parts[0].mask for _ in range(2)]
    assert not torch.equal(*masks)


def test_input_gradients_are_finite_and_nonzero_in_eval():
    torch.manual_seed(0)
    model = timm.create_model("resnet18_fsr").eval()
    x, y = load_cifar10("test", limit=32)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    assert torch.isfinite(grad).all()
    nonzero = (grad.flatten(1).abs().amax(dim=1) > 0).float().mean().item()
    assert nonzero >= 0.95


def test_ablation_switches_reach_the_fsr_modules():
    x = torch.rand(2, 3, 32, 32)
    full = timm.create_model("resnet18_fsr").eval()
    no_rec = timm.create_model("resnet18_fsr", fsr_recalibration=False)
    no_sep = timm.create_model("resnet18_fsr", fsr_separation=False)
    r_params = params_m(full.fsr4.recalibration_net)
    assert params_m(full) - params_m(no_rec) == pytest.approx(r_params)
    assert params_m(full) - params_m(no_sep) == pytest.approx(r_params)  # S and R have the same size
    with torch.no_grad():
        parts = full(x, return_fsr=True).fsr_parts[0]
        full.set_fsr_output("f_pos")
        torch.testing.assert_close(full.forward_features(x), parts.f_pos)
        full.set_fsr_output("f_neg")
        torch.testing.assert_close(full.forward_features(x), parts.f_neg)
    with pytest.raises(ValueError, match="fsr_stages"):
        timm.create_model("resnet18_fsr", fsr_stages=(5,))


def test_fsr_at_several_positions():
    model = timm.create_model("resnet18_fsr", fsr_stages=(3, 4)).train()
    out = model(torch.rand(2, 3, 32, 32), return_fsr=True)
    assert [p.f_pos.shape[1] for p in out.fsr_parts] == [256, 512]
    assert FSRLoss.for_model(model)(out, torch.tensor([0, 1])).ndim == 0


@pytest.mark.parametrize(
    "bad,message",
    [
        (torch.rand(3, 32, 32), "shape"),
        (torch.rand(2, 1, 32, 32), "channels"),
        (torch.rand(2, 32, 32, 3), "channels"),
        ((torch.rand(2, 3, 32, 32) * 255).to(torch.uint8), "dtype"),
        ([[0.0]], "Tensor"),
    ],
)
def test_bad_input_is_a_value_error(bad, message):
    model = timm.create_model("resnet18_fsr").eval()
    with pytest.raises(ValueError, match=message):
        model(bad)


def test_pixels_far_outside_0_1_are_warned_about_and_raw_pixels_are_not():
    model = timm.create_model("resnet18_plain", widths=[8, 16, 32, 64]).eval()
    x = torch.rand(2, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(x)  # [0, 1]: nothing to say
    for scaled, shown in ((x * 255, "divide 0-255 images by 255"), ((x - 0.5) / 0.25, "without normalisation")):
        with pytest.warns(UserWarning, match=shown):
            model(scaled)


def test_weights_that_do_not_fit_are_a_value_error():
    source = timm.create_model("resnet18_fsr", num_classes=100)
    target = timm.create_model("resnet18_fsr")
    with pytest.raises(ValueError, match=r"fc.weight: checkpoint \(100, 512\) vs model \(10, 512\)"):
        target.load_state_dict(source.state_dict())
    with pytest.raises(ValueError, match="missing"):
        target.load_state_dict(timm.create_model("resnet18_plain").state_dict())


def _uniform_bound(weight):
    return 1 / math.sqrt(nn.init._calculate_fan_in_and_fan_out(weight)[0])


def _is_pytorch_default(weight):  # Kaiming-uniform with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = _uniform_bound(weight)
    return weight.abs().max() <= bound and weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15)


def _is_kaiming_fan_out(weight):  # N(0, sqrt(2 / (k * k * out_channels)))
    k2 = weight[0, 0].numel()
    return weight.std().item() == pytest.approx(math.sqrt(2 / (k2 * weight.shape[0])), rel=0.15)


@pytest.mark.parametrize(
    "name,conv,conv_bias,linear,linear_bias",
    [  # the authors' files: resnet_fsr.py has no init code; vgg_fsr.py and wideresnet34_fsr.py have their own
        ("resnet18_fsr", _is_pytorch_default, None, _is_pytorch_default, "uniform"),
        ("vgg16_fsr", _is_kaiming_fan_out, "zero", lambda w: w.std().item() == pytest.approx(0.01, rel=0.15), "zero"),
        ("wrn34_10_fsr", _is_kaiming_fan_out, None, _is_pytorch_default, "zero"),
    ],
)
def test_each_backbone_starts_as_the_authors_does(name, conv, conv_bias, linear, linear_bias):
    torch.manual_seed(0)
    model = timm.create_model(name, **(dict(widen_factor=2) if name.startswith("wrn") else {}))
    heads = FSRLoss.for_model(model).heads
    hf = fsr_models.FSRForImageClassification(fsr_models.FSRConfig.from_timm_model(model)).model  # post_init's init
    for net in (model, hf):
        modules = list(net.modules()) + (list(heads) if net is model else [])
        convs = [m for m in modules if isinstance(m, nn.Conv2d) and m.weight.numel() >= 4096]  # enough draws
        linears = [m for m in modules if isinstance(m, nn.Linear)]
        assert all(
            any(c is m for m in convs) for f in net.fsr_modules() for c in f.modules() if isinstance(c, nn.Conv2d)
        )
        assert all(conv(m.weight) for m in convs), name
        assert all(linear(m.weight) for m in linears if m.weight.numel() >= 4096), name
        for m in [m for m in modules if isinstance(m, nn.Conv2d) and m.bias is not None] if conv_bias else []:
            assert not m.bias.any()
        for m in linears:
            if linear_bias == "zero":
                assert not m.bias.any()
            else:
                assert m.bias.any() and m.bias.abs().max() <= _uniform_bound(m.weight)
        bns = [m for m in modules if isinstance(m, nn.BatchNorm2d)]
        assert all(bool((m.weight == 1).all()) and not m.bias.any() for m in bns)
