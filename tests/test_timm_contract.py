"""The contract of timm's own model tests (its tests/test_models.py) for the six networks: pretrained cfgs, the head,
forward_intermediates / prune_intermediate_layers / features_only, and the routes to TorchScript, export and compile."""

import copy
import inspect
import io

import pytest
import timm
import torch
from timm.models._features import FeatureGetterNet, FeatureListNet

import fsr_models
from fsr_models.fsr.fsr_core import FSR

ALL = [name for pair in fsr_models.ARCHITECTURES.values() for name in pair] + [
    "resnet18_cas",
    "resnet18_cifs",
    "resnet18_fd",
]
# Tests of mechanics use narrow networks of the same structure; cfg tests build the real sizes on the meta device.
SMALL = {
    "resnet18": dict(widths=[8, 16, 32, 64]),
    "vgg16": dict(stages=[[8, 2], [16, 2], [32, 3], [32, 3], [32, 3]]),
    "wrn34_10": dict(widen_factor=1),
}
STRIDE = {"resnet18": 8, "vgg16": 32, "wrn34_10": 4}  # of forward_features' output
FSR_TAP = {"resnet18_fsr": 4, "vgg16_fsr": 3, "wrn34_10_fsr": 3}  # the feature_info index that is FSR's output
# CAS's and CIFS's auxiliary heads' biases change their logits, not the network's: only their training loss trains them
AUX_LOSS_ONLY = ".defense.fc.bias"


def without_gradient(model):
    return [n for n, p in model.named_parameters() if p.grad is None and not n.endswith(AUX_LOSS_ONLY)]


def backbone(name):
    return name.rsplit("_", 1)[0]


def build(name, **kwargs):
    return timm.create_model(name, **{**SMALL[backbone(name)], **kwargs})


def assert_equal_lists(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert torch.equal(a, e)


@pytest.mark.parametrize("name", ALL)
def test_pretrained_cfgs_describe_the_network(name):
    tags = {t.partition(".")[2] for t in timm.list_models(name, include_tags=True)}  # the defenses: at_cifar10
    for tag in sorted(tags & {"at_cifar10", "at_cifar100", "at_tiny_imagenet"}):  # distinct (classes, input size)
        model = timm.create_model(f"{name}.{tag}", device="meta").eval()
        cfg = model.pretrained_cfg
        side = cfg["input_size"][1]
        x = torch.empty(1, *cfg["input_size"], device="meta")
        assert cfg["pool_size"] == (side // STRIDE[backbone(name)],) * 2
        assert model.in_chans == cfg["input_size"][0] == 3
        features = model.forward_features(x)
        assert features.shape == (1, model.num_features, *cfg["pool_size"])  # pool_size is the unpooled map
        assert model.forward_head(features, pre_logits=True).shape == (1, model.head_hidden_size)
        assert model(x).shape == (1, cfg["num_classes"]) and model.num_classes == cfg["num_classes"]
        weights = model.state_dict()
        assert weights[f"{cfg['first_conv']}.weight"].shape[1] == model.in_chans
        assert weights[f"{cfg['classifier']}.weight"].shape == (cfg["num_classes"], model.head_hidden_size)
        data = timm.data.resolve_data_config({}, model=model)
        assert data["input_size"] == cfg["input_size"] and data["crop_pct"] == 1.0
        assert data["mean"] == (0.0, 0.0, 0.0) and data["std"] == (1.0, 1.0, 1.0)

    # without the classifier: pooled features; without pooling too: the map of pool_size
    model.reset_classifier(0)
    assert model.num_classes == 0 and model(x).shape == (1, model.head_hidden_size)
    model.reset_classifier(0, "")
    assert model(x).shape[-2:] == cfg["pool_size"]
    model = timm.create_model(name, num_classes=0, global_pool="", device="meta").eval()
    assert model(torch.empty(1, 3, 32, 32, device="meta")).shape[-2:] == (32 // STRIDE[backbone(name)],) * 2


@pytest.mark.parametrize("name", ALL)
def test_factory_arguments(name):
    model = timm.create_model(name, device="meta", dtype=torch.float64)  # no device context: the arguments alone
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    with pytest.raises(TypeError):  # an unknown argument is not silently dropped
        timm.create_model(name, not_a_model_arg=1, device="meta")


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_and_dtype_change(name):
    model = build(name, num_classes=42).train()
    out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 42) and not out.isnan().any()
    out.mean().backward()
    assert without_gradient(model) == []
    model.eval().to(torch.bfloat16)
    assert model(torch.rand(2, 3, 32, 32, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("name", ALL)
def test_reset_classifier_keeps_the_pooling(name):
    model = build(name, global_pool="max").eval()
    assert inspect.signature(model.reset_classifier).parameters["global_pool"].default is None
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(5)
        assert model.global_pool.pool_type == "max" and model(x).shape == (2, 5)
        assert torch.equal(model.forward_head(model.forward_features(x), pre_logits=True), pooled)
        model.reset_classifier(0, "")
        model.reset_classifier(7)  # an unpooled network that gets classes again is pooled with 'avg'
        assert model.global_pool.pool_type == "avg" and model(x).shape == (2, 7)
    model.to(device="meta", dtype=torch.float64)
    model.reset_classifier(3)  # the new head is made where the network is, in its mode
    assert model.fc.weight.device.type == "meta" and model.fc.weight.dtype == torch.float64
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("name", ALL)
def test_concat_pooling_widens_the_head_or_is_refused(name):
    if name.startswith("vgg"):  # the pre-logits MLP takes num_features inputs
        with pytest.raises(AssertionError, match="pre-logits MLP"):
            build(name, global_pool="catavgmax")
        with pytest.raises(AssertionError, match="pre-logits MLP"):
            build(name).reset_classifier(7, "catavgmax")
        return
    model = build(name, global_pool="catavgmax").eval()
    x = torch.rand(2, 3, 32, 32)
    assert model.head_hidden_size == 2 * model.num_features
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.head_hidden_size)
    assert model(x).shape == (2, 10)


@pytest.mark.parametrize("name", ALL)
def test_forward_intermediates_are_the_feature_info_outputs(name):
    model = build(name).eval()
    x = torch.rand(2, 3, 32, 32)
    outputs = {}
    for info in model.feature_info:
        module = model.get_submodule(info["module"])
        module.register_forward_hook(lambda m, args, out, key=info["module"]: outputs.__setitem__(key, out))
    fsr_taps = [i for i, info in enumerate(model.feature_info) if isinstance(model.get_submodule(info["module"]), FSR)]
    assert fsr_taps == ([FSR_TAP[name]] if name in FSR_TAP else [])  # FSR's output is its stage's feature

    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        assert_equal_lists(intermediates, [outputs[info["module"]] for info in model.feature_info])
        assert [tuple(t.shape) for t in intermediates] == [
            (2, info["num_chs"], 32 // info["reduction"], 32 // info["reduction"]) for info in model.feature_info
        ]
        assert torch.equal(final, model.forward_features(x))

        assert_equal_lists(model.forward_intermediates(x, indices=2, intermediates_only=True), intermediates[-2:])
        assert_equal_lists(model.forward_intermediates(x, indices=[0, -1])[1], [intermediates[0], intermediates[-1]])
        final, taken = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert torch.equal(final, intermediates[1]) and torch.equal(taken[0], intermediates[1])
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")
    with pytest.raises(ValueError, match="dtype"):
        model.forward_intermediates((x * 255).to(torch.uint8))


@pytest.mark.parametrize("name", ALL)
def test_prune_intermediate_layers(name):
    model = build(name).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        taps = model.forward_intermediates(x, intermediates_only=True)
        kept = copy.deepcopy(model)
        kept.prune_intermediate_layers([-1], prune_head=False)
        assert torch.equal(kept(x), logits)

    for i in range(len(taps)):
        pruned = copy.deepcopy(model)
        assert pruned.prune_intermediate_layers([i]) == [i]
        assert pruned.num_classes == 0 and pruned.num_features == model.feature_info[i]["num_chs"]
        assert len(pruned.fsr_modules()) == int(name in FSR_TAP and FSR_TAP[name] <= i)  # FSR after the tap goes
        with torch.no_grad():
            assert torch.equal(pruned.forward_intermediates(x, indices=[i], intermediates_only=True)[0], taps[i])
            assert torch.equal(pruned.forward_features(x), taps[i])  # the features end at the tap
            assert torch.equal(pruned(x), taps[i])  # no head: neither pooling nor classifier
        pruned.reset_classifier(7, "avg")
        assert pruned.head_hidden_size == model.feature_info[i]["num_chs"]
        out = pruned.train()(x)
        assert out.shape == (2, 7)
        out.sum().backward()  # nothing left that the features do not use (DDP)
        assert without_gradient(pruned) == []


@pytest.mark.parametrize("name", ALL)
def test_features_only_hooks_and_getter_agree(name):
    torch.manual_seed(0)
    listed = build(name, features_only=True).eval()
    torch.manual_seed(0)
    getter = build(name, features_only=True, feature_cls="getter").eval()
    assert isinstance(listed, FeatureListNet) and isinstance(getter, FeatureGetterNet)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        maps = listed(x)
        assert_equal_lists(getter(x), maps)
    assert listed.feature_info.channels() == getter.feature_info.channels() == [m.shape[1] for m in maps]
    assert listed.feature_info.reduction() == getter.feature_info.reduction() == [32 // m.shape[-1] for m in maps]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("name", ALL)
def test_torchscript_gives_the_eager_logits(name):
    model = build(name).eval()
    scripted = torch.jit.script(model)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        assert torch.equal(torch.jit.load(buffer)(x), model(x))
        if name in FSR_TAP:  # training mode: the same Gumbel draws give the same logits
            model.train()
            torch.manual_seed(0)
            eager = model(x)
            torch.manual_seed(0)
            assert torch.equal(scripted.train()(x), eager)
    with pytest.raises(torch.jit.Error, match="eager mode"):
        scripted(x, True)


@pytest.mark.filterwarnings("ignore:The nodes obtained by tracing the model in train mode")  # FSR's Gumbel draws
@pytest.mark.parametrize("name", ALL)
def test_fx_graphs_give_the_eager_outputs_and_keep_the_input_check(name):
    """timm's FX route (its fx tests, GraphExtractNet, features_only with feature_cls='fx') traces the network."""
    from timm.models._features_fx import FeatureGraphNet, GraphExtractNet, get_graph_node_names

    model = build(name).eval()
    x = torch.rand(2, 3, 32, 32)
    train_nodes, eval_nodes = get_graph_node_names(model)
    logits = GraphExtractNet(model, [eval_nodes[-1]]).eval()
    features = FeatureGraphNet(model, out_indices=tuple(range(len(model.feature_info)))).eval()
    with torch.no_grad():
        assert torch.equal(logits(x), model(x))
        assert_equal_lists(features(x), model.forward_intermediates(x, intermediates_only=True))
        if name in FSR_TAP:  # training mode: the same Gumbel draws give the same logits
            torch.manual_seed(0)
            eager = model.train()(x)
            torch.manual_seed(0)
            assert torch.equal(logits.train()(x), eager)
    with pytest.raises(ValueError, match="expected 3 channels in dim 1"):
        logits(torch.rand(2, 4, 32, 32))  # the check of the input is a call in the graph, not traced away


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize(
    "ablation", [dict(fsr_separation=False), dict(fsr_recalibration=False), dict(fsr_output="f_neg")]
)
def test_torchscript_of_the_ablations(ablation):
    model = build("resnet18_fsr", **ablation).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(torch.jit.script(model)(x), model(x))


@pytest.mark.parametrize("name", ["resnet18_fsr", "vgg16_fsr", "wrn34_10_fsr"])
def test_export_and_compile_give_the_eager_outputs(name):
    model = build(name).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected, parts = model(x), model(x, return_fsr=True).fsr_parts[0]
        torch.testing.assert_close(torch.export.export(model, (x,)).module()(x), expected, rtol=1e-5, atol=1e-6)
        compiled = torch.compile(model, backend="eager", fullgraph=True)  # one graph each: no graph breaks
        torch.testing.assert_close(compiled(x), expected, rtol=1e-5, atol=1e-6)
        out = compiled(x, return_fsr=True)  # what the training step compiles
        torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.fsr_parts[0].mask, parts.mask, rtol=1e-5, atol=1e-6)


def test_fsr_attached_creates_with_no_arguments_and_passes_timms_checks():
    """`fsr_attached` as timm's own tests/test_models.py builds every registered name (base, cfg and features):
    with no arguments (FSR after the last stage of timm's resnet18), forward and backward, a pretrained_cfg that
    describes it (pool_size, first conv, classifier), heads removed by reset_classifier or by arguments,
    forward_intermediates, and features_only."""
    torch.manual_seed(0)
    model = timm.create_model("fsr_attached").eval()
    assert model.base_model_name == "resnet18" and model.fsr_stages == (4,) and model.num_classes == 1000
    cfg, state = model.pretrained_cfg, model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state and f"{cfg['classifier']}.weight" in state
    x = torch.rand(1, *cfg["input_size"])  # [0, 1] pixels, which the network takes
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (1, model.num_features, *cfg["pool_size"])
        assert model.forward_head(features, pre_logits=True).shape == (1, model.head_hidden_size)
        logits = model(x)
        model.set_grad_checkpointing()
        torch.testing.assert_close(model(x), logits, rtol=1e-4, atol=1e-5)
        final, intermediates = model.forward_intermediates(x)
        assert [t.shape[1] for t in intermediates] == [i["num_chs"] for i in model.feature_info]
        assert torch.equal(final, model.forward_features(x))
        model.reset_classifier(0)
        assert model(x).shape == (1, model.head_hidden_size)
        model.reset_classifier(0, "")
        assert model(x).shape[-2:] == cfg["pool_size"]
        headless = timm.create_model("fsr_attached", num_classes=0, global_pool="").eval()
        assert headless(x).shape[-2:] == cfg["pool_size"]

    trained = timm.create_model("fsr_attached", num_classes=42).train()
    out = trained(torch.rand(2, 3, 128, 128))
    out.mean().backward()
    assert out.shape == (2, 42) and [n for n, p in trained.named_parameters() if p.grad is None] == []

    features_only = timm.create_model("fsr_attached", features_only=True).eval()
    with torch.no_grad():
        maps = features_only(torch.rand(1, 3, 96, 96))
    assert [m.shape[1] for m in maps] == features_only.feature_info.channels() == [64, 64, 128, 256, 512]
    assert [96 // m.shape[-1] for m in maps] == features_only.feature_info.reduction() == [2, 4, 8, 16, 32]


def test_an_attached_networks_features_are_its_own_modules_and_fsr_follows_its_stage():
    """features_only by module names (timm's hooks) and by forward_intermediates give the same maps, the last
    FSR's output; the module names of feature_info are the attached network's own."""
    torch.manual_seed(0)
    model = timm.create_model("fsr_attached", base_model="test_resnet", num_classes=10).eval()
    assert all(model.get_submodule(info["module"]) is not None for info in model.feature_info)
    assert model.feature_info[-1]["module"] == "base.layer4"
    torch.manual_seed(0)
    hooked = timm.create_model("fsr_attached", base_model="test_resnet", features_only=True, feature_cls="hook")
    torch.manual_seed(0)
    getter = timm.create_model("fsr_attached", base_model="test_resnet", features_only=True)
    assert isinstance(getter, FeatureGetterNet)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert_equal_lists(hooked.eval()(x), getter.eval()(x))
        last = model.forward_intermediates(x, indices=[-1], intermediates_only=True)[0]
        (fsr,) = model.fsr_modules()
        backbones = model.base.forward_intermediates(model.normalize(x), indices=[-1], intermediates_only=True)[0]
        assert torch.equal(last, backbones)  # the backbone's own call runs through FSR too
        model.fsr["layer4"].output = "f_pos"
        assert not torch.equal(model.forward_intermediates(x, indices=[-1], intermediates_only=True)[0], last)
        assert fsr is model.fsr["layer4"]


def test_an_attached_networks_groups_pruning_and_copies():
    """group_matcher covers every parameter (layer-wise lr decay), pruning drops the FSR of a pruned stage, a
    deepcopy and a compiled network run their own FSR, and nn.DataParallel's replicas (which would share the
    first replica's hooks) are refused in one line."""
    from timm.models import group_parameters

    torch.manual_seed(0)
    model = timm.create_model("fsr_attached", base_model="test_resnet", num_classes=10, fsr_stages=[2, 4]).eval()
    groups = group_parameters(model, model.group_matcher())
    assert sorted(p for names in groups.values() for p in names) == sorted(n for n, _ in model.named_parameters())
    fsr_names = {n for n, _ in model.fsr.named_parameters(prefix="fsr")}
    assert fsr_names in [set(names) for names in groups.values()]  # FSR's modules: a group of their own
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        copied = copy.deepcopy(model)
        copied.set_fsr_output("f_pos")
        assert not torch.equal(copied(x), logits) and torch.equal(model(x), logits)
        compiled = torch.compile(model, backend="eager")
        torch.testing.assert_close(compiled(x), logits, rtol=1e-5, atol=1e-6)
        pruned = copy.deepcopy(model)
        assert pruned.prune_intermediate_layers([0, 1, 2]) == [0, 1, 2]
        assert pruned.fsr_stages == (2,) and list(pruned.fsr) == ["layer2"]
        assert pruned(x).shape[1] == model.feature_info[2]["num_chs"]
    with pytest.raises(ValueError, match="DistributedDataParallel"):
        model._replicate_for_data_parallel()
