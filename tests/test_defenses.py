"""CAS, CIFS and Feature Denoising (FSR's Table 4 baselines) in ResNet-18: sizes as the authors', the modules'
equations on small tensors, labels and auxiliary logits, and parity with the authors' models (their outputs recorded
once by tests/data/defenses/record.py for weights these tests regenerate from a seed)."""

from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

import fsr_models
from fsr_models.defenses import CAS, CIFS, DefenseOutput, DenoisingBlock, defense_loss, non_local_means
from fsr_models.facts.networks import twin_name

FIXTURE = Path(__file__).parent / "data" / "defenses" / "authors_outputs.safetensors"
NAMES = ["resnet18_cas", "resnet18_cifs", "resnet18_fd"]
# The parity fixture: the weights and inputs the recording used, regenerated here from these seeds.
WEIGHTS_SEED, BN_SEED, INPUT_SEED = 0, 1, 2
LABELS = [3, 7]
BETA = 2.0  # the weight of the auxiliary CE in CAS's and CIFS's joint loss (both authors' default)
FD_SHAPE = (2, 8, 3, 3)  # the Feature Denoising block's parity input: C = 8 channels over 3 x 3 positions


def randomise_bn(model: nn.Module, seed: int) -> None:
    """BN affine parameters and running statistics drawn away from their init, so that train and eval differ and
    Feature Denoising's gamma is no longer 0."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = 0.5 + torch.rand(c, generator=gen)
            m.bias.data = 0.1 * torch.randn(c, generator=gen)
            m.running_mean = 0.1 * torch.randn(c, generator=gen)
            m.running_var = 0.5 + torch.rand(c, generator=gen)


def seeded_network(name: str) -> nn.Module:
    torch.manual_seed(WEIGHTS_SEED)
    model = timm.create_model(name)
    randomise_bn(model, BN_SEED)
    return model


def seeded_denoising_block() -> DenoisingBlock:
    """A denoising block in float64 whose embeddings are 50 times their init's, so that the softmax is far from
    uniform."""
    torch.manual_seed(WEIGHTS_SEED)
    block = DenoisingBlock(FD_SHAPE[1])
    randomise_bn(block, BN_SEED)
    block.double()
    with torch.no_grad():
        block.theta.weight.mul_(50)
        block.phi.weight.mul_(50)
    return block


def parity_inputs(shape=(2, 3, 32, 32), dtype=torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(INPUT_SEED), dtype=dtype)


def joint_loss(logits: torch.Tensor, aux_logits, targets: torch.Tensor) -> torch.Tensor:
    """CAS's and CIFS's training and attack loss: CE + beta * mean CE of the auxiliary heads."""
    aux = sum(F.cross_entropy(a, targets) for a in aux_logits) / len(aux_logits)
    return F.cross_entropy(logits, targets) + BETA * aux


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The authors' parameter counts (SPEC: their models measured); FD's from its equations: 2C^2 + 2C per block.
PARAMS = {
    "resnet18_plain": 11_173_962,
    "resnet18_cas": 11_184_222,  # + 2 x Linear(512, 10)
    "resnet18_cifs": 11_246_046,  # + Linear(512, 128) + Linear(128, 10) + Linear(512, 10)
    "resnet18_fd": 11_173_962 + sum(2 * c * c + 2 * c for c in (64, 128, 256, 512)),  # 11,872,202
}


@pytest.mark.parametrize("name", PARAMS)
def test_parameter_counts_are_the_authors(name):
    assert params(timm.create_model(name, device="meta")) == PARAMS[name]


def test_fd_after_layer4_only():
    model = timm.create_model("resnet18_fd", fd_stages=(4,), device="meta")
    assert params(model) == 11_699_274 and [n for n, _ in model.named_children() if n.startswith("fd")] == ["fd4"]
    assert model.feature_info[-1]["module"] == "fd4"


def test_placement_and_registration():
    cas, cifs = timm.create_model("resnet18_cas"), timm.create_model("resnet18_cifs")
    assert [type(b.defense) for b in cas.layer4] == [CAS, CAS] and not cas.fsr_modules()
    assert [b.defense.hidden is not None for b in cifs.layer4] == [True, False]  # nonlinear probe, then linear
    assert type(cas.layer3[-1]).__name__ == "BasicBlock"  # the earlier stages are plain
    fd = timm.create_model("resnet18_fd")
    assert [i["module"] for i in fd.feature_info] == ["act1", "fd1", "fd2", "fd3", "fd4"]
    for name in NAMES:
        cfg = timm.models.get_pretrained_cfg(f"{name}.at_cifar10")
        assert cfg.hf_hub_id == f"fsr-zoo/{name}.at_cifar10" and cfg.num_classes == 10
        assert timm.list_models(name, include_tags=True) == [f"{name}.at_cifar10"]
    assert timm.models.get_pretrained_cfg("resnet18_cas.at_cifar10").paper_ids == "arXiv:2103.08307"
    with pytest.raises(ValueError, match="one defense"):
        timm.create_model("resnet18_cas", fsr_stages=(4,))


def test_cas_mask_is_the_class_row_of_its_classifier():
    torch.manual_seed(0)
    cas = CAS(4, 3)
    f = torch.randn(2, 4, 2, 2)
    targets = torch.tensor([2, 0])
    aux = cas.fc(f.mean(dim=(2, 3)))
    predicted = aux.argmax(1)
    assert not torch.equal(predicted, targets)  # so that the two rules give different masks here
    out, aux_out = cas.train()(f, targets, return_aux=True)
    torch.testing.assert_close(aux_out, aux)
    torch.testing.assert_close(out, f * cas.fc.weight[targets][:, :, None, None])  # the true class's row
    for out in (cas.eval()(f, targets), cas.eval()(f), cas.train()(f)):  # eval, or no labels: the prediction's
        torch.testing.assert_close(out, f * cas.fc.weight[predicted][:, :, None, None])


@pytest.mark.parametrize("hidden", [None, 5])
def test_cifs_mask_is_the_channel_softmax_of_the_probe_gradient(hidden):
    """The mask against its definition by autograd: softmax over channels of the spatial sum of d(p[t1] + p[t2])/df
    at the feature held constant (p[y] + p[t2] with labels in training)."""
    torch.manual_seed(0)
    cifs = CIFS(6, 4, hidden).double()
    f = torch.randn(3, 6, 2, 2, dtype=torch.float64)
    targets = torch.tensor([0, 1, 2])

    def probe(feature):
        g = feature.mean(dim=(2, 3))
        return cifs.fc(g if hidden is None else F.softplus(cifs.hidden(g), beta=5))

    for training, labels in [(True, targets), (False, targets), (False, None)]:
        cifs.train(training)
        constant = f.detach().requires_grad_(True)
        p = probe(constant)
        top2 = p.topk(2, dim=1).indices
        first = labels if training else top2[:, 0]
        rows = torch.arange(3)
        grad = torch.autograd.grad(p[rows, first].sum() + p[rows, top2[:, 1]].sum(), constant)[0]
        mask = F.softmax(grad.sum(dim=(2, 3)), dim=1)
        out, probe_logits = cifs(f, labels, return_aux=True)
        torch.testing.assert_close(probe_logits, p.detach())
        torch.testing.assert_close(out, f * mask[:, :, None, None], rtol=1e-12, atol=1e-14)
        assert not torch.allclose(mask, torch.full_like(mask, 1 / 6), atol=1e-3)  # a mask that selects


def test_cifs_mask_passes_gradients_to_the_probe_not_to_the_feature():
    torch.manual_seed(0)
    cifs = CIFS(6, 4, 5).eval()
    f = torch.randn(2, 6, 2, 2, requires_grad=True)
    w = torch.randn(2, 6, 2, 2)
    out = cifs(f)
    (grad_f,) = torch.autograd.grad((out * w).sum(), f, retain_graph=True)
    mask = (out / f).detach()  # f * m: the input gradient is m * w when m is constant in f (the authors' detach)
    torch.testing.assert_close(grad_f, mask * w)
    grads = torch.autograd.grad((out * w).sum(), [cifs.hidden.weight, cifs.hidden.bias, cifs.fc.weight])
    assert all(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():  # the authors' module cannot run without autograd; this one can
        torch.testing.assert_close(cifs(f), out.detach())


def test_fd_block_starts_as_the_identity():
    torch.manual_seed(0)
    block = DenoisingBlock(8)
    assert torch.equal(block.bn.weight, torch.zeros(8)) and block.theta.weight.std() < 0.02
    x = torch.randn(2, 8, 3, 3)
    assert torch.equal(block.train()(x), x) and torch.equal(block.eval()(x), x)
    fd = timm.create_model("resnet18_fd").eval()
    plain = timm.create_model("resnet18_plain").eval()
    plain.load_state_dict({k: v for k, v in fd.state_dict().items() if not k.startswith("fd")})
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fd(x), plain(x), rtol=0, atol=0)  # the zoo's init keeps FD's gamma at 0


@pytest.mark.parametrize("embed", [True, False])
def test_fd_block_is_its_equation_on_a_small_tensor(embed):
    """out_i = x_i + BN(W_z sum_j softmax_j(theta_i . phi_j / sqrt(d)) x_j), position by position, on 2x3x2x2."""
    torch.manual_seed(0)
    block = DenoisingBlock(3, embed=embed).eval()
    randomise_bn(block, 0)
    block.double()
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    theta = block.theta(x).flatten(2) if embed else x.flatten(2)
    phi = block.phi(x).flatten(2) if embed else x.flatten(2)
    d = theta.shape[1]
    y = torch.zeros(2, 3, 4, dtype=torch.float64)
    for n in range(2):
        for i in range(4):
            w = torch.softmax(torch.stack([theta[n, :, i] @ phi[n, :, j] for j in range(4)]) / d**0.5, dim=0)
            y[n, :, i] = sum(w[j] * x[n].flatten(1)[:, j] for j in range(4))
    z = F.conv2d(y.view(2, 3, 2, 2), block.conv.weight)
    bn = block.bn
    z = (z - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + bn.eps).sqrt()
    expected = x + z * bn.weight[:, None, None] + bn.bias[:, None, None]
    torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)
    dot = non_local_means(x, theta.view_as(x[:, :d]), phi.view_as(x[:, :d]), softmax=False)  # dot product: / HW
    torch.testing.assert_close(dot.flatten(2), torch.bmm(x.flatten(2), (theta.mT @ phi).mT) / 4)


@pytest.mark.parametrize("name", NAMES)
def test_eval_is_deterministic_and_input_gradients_are_finite_and_nonzero(name):
    model = seeded_network(name).eval()
    x = parity_inputs().requires_grad_(True)
    targets = torch.tensor(LABELS)
    out = model(x, return_defense=True)
    assert isinstance(out, DefenseOutput) and len(out.aux_logits) == (0 if name == "resnet18_fd" else 2)
    with torch.no_grad():
        assert torch.equal(model(x), out.logits) and torch.equal(model(x), model(x))
    loss = joint_loss(out.logits, out.aux_logits, targets) if out.aux_logits else F.cross_entropy(out.logits, targets)
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.isfinite().all() and (grad != 0).float().mean() > 0.99


@pytest.mark.parametrize("name", ["resnet18_cas", "resnet18_cifs"])
def test_labels_choose_the_masks_in_training_only(name):
    model = seeded_network(name)
    x, targets = parity_inputs(), torch.tensor(LABELS)
    with torch.no_grad():
        predicted = model.eval()(x, return_defense=True)
        assert torch.equal(model(x, targets=targets), predicted.logits)  # eval: the labels are ignored
        unlabelled = model.train()(x, return_defense=True)
        assert torch.equal(model(x), unlabelled.logits)  # no labels: the prediction's masks, in training too
    labelled = model(x, targets=targets, return_defense=True)
    assert not torch.allclose(labelled.logits, unlabelled.logits)
    assert [a.shape for a in labelled.aux_logits] == [(2, 10), (2, 10)]
    loss = joint_loss(labelled.logits, labelled.aux_logits, targets)
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []  # the joint loss trains every head


def test_targets_and_defense_outputs_are_refused_where_they_mean_nothing():
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="neither"):
        timm.create_model("resnet18_fd")(x, targets=torch.tensor([0]))
    with pytest.raises(ValueError, match="CAS, CIFS or Feature Denoising"):
        timm.create_model("resnet18_fsr")(x, return_defense=True)
    assert fsr_models.DefenseOutput is DefenseOutput


@pytest.fixture(scope="module")
def recorded():
    return load_file(FIXTURE)


@pytest.mark.parametrize("name", ["resnet18_cas", "resnet18_cifs"])
def test_parity_with_the_authors_models(name, recorded):
    """The authors' outputs for these weights (record.py copied them into their model): eval mode (their attack and
    test setting: logits, auxiliary logits, input gradient of the joint loss) and train mode with labels (logits,
    auxiliary logits, the norm of each parameter's gradient of the joint loss)."""
    key = name.split("_")[1]
    model = seeded_network(name).eval()
    x, targets = parity_inputs().requires_grad_(True), torch.tensor(LABELS)
    out = model(x, return_defense=True)
    (grad,) = torch.autograd.grad(joint_loss(out.logits, out.aux_logits, targets), x)
    torch.testing.assert_close(out.logits, recorded[f"{key}.eval.logits"], rtol=0, atol=1e-5)
    for i, aux in enumerate(out.aux_logits):
        torch.testing.assert_close(aux, recorded[f"{key}.eval.aux{i}"], rtol=0, atol=1e-5)
    scale = recorded[f"{key}.eval.input_grad"].abs().max()
    torch.testing.assert_close(grad, recorded[f"{key}.eval.input_grad"], rtol=0, atol=1e-5 * scale)
    out = model.train()(x.detach(), targets=targets, return_defense=True)
    torch.testing.assert_close(out.logits, recorded[f"{key}.train.logits"], rtol=0, atol=1e-5)
    for i, aux in enumerate(out.aux_logits):
        torch.testing.assert_close(aux, recorded[f"{key}.train.aux{i}"], rtol=0, atol=1e-5)
    # every parameter's gradient of the training loss, through the masks too (CIFS: its probe through the mask)
    grads = torch.autograd.grad(joint_loss(out.logits, out.aux_logits, targets), list(model.parameters()))
    norms = torch.stack([g.norm() for g in grads])
    torch.testing.assert_close(norms, recorded[f"{key}.train.param_grad_norms"], rtol=1e-4, atol=1e-9)


def test_fd_block_parity_with_the_authors_tensorflow_code(recorded):
    """The authors' denoising op (TensorFlow, transliterated to numpy in float64 by record.py) for these weights."""
    block = seeded_denoising_block()
    x = parity_inputs(FD_SHAPE, torch.float64)
    torch.testing.assert_close(block.eval()(x), recorded["fd.eval.block"], rtol=0, atol=1e-12)
    torch.testing.assert_close(block.train()(x), recorded["fd.train.block"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_a_defended_network_saves_and_loads_through_every_loader_with_the_same_logits(name, tmp_path):
    from transformers import AutoModelForImageClassification

    from fsr_models.hf import FSRConfig
    from fsr_models.hub.folders import load_model, save_folder

    torch.manual_seed(0)
    model = timm.create_model(name, layers=[1, 1, 1, 1], widths=[8, 16, 32, 64]).eval()
    randomise_bn(model, BN_SEED)
    save_folder(model, tmp_path)
    config = FSRConfig.from_pretrained(tmp_path)
    defense = name.removeprefix("resnet18_")
    assert (config.defense, config.fsr_stages, config.timm_architecture) == (defense, [], name)
    assert config.defense_stages == ([1, 2, 3, 4] if defense == "fd" else [4])
    x = parity_inputs((3, 3, 32, 32))
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(load_model(tmp_path).eval()(x), expected)
        assert torch.equal(timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()(x), expected)
        hf = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
        assert torch.equal(hf(pixel_values=x).logits, expected)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(backbone="vgg16", defense="cas"), "in resnet18 only"),
        (dict(defense="fsr"), "the defenses are \\['cas', 'cifs', 'fd'\\]"),
        (dict(defense="cas", fsr_stages=[4]), "has no FSR: fsr_stages must be \\[\\]"),
        (dict(defense_stages=[4]), "give defense"),
        (dict(defense="fd", defense_stages=[5]), "must be stages in 1..4"),
        (dict(defense="cas", defense_stages=[]), "at least one"),
    ],
)
def test_a_config_with_a_defense_it_cannot_build_is_refused(fields, message):
    from fsr_models.hf import FSRConfig

    with pytest.raises(ValueError, match=message):
        FSRConfig(**fields)


def test_a_defense_placed_in_a_network_of_another_name_is_not_saved_under_that_name(tmp_path):
    from fsr_models.hub.folders import save_folder

    with pytest.raises(ValueError, match="fd_stages: a network with this defense is saved as resnet18_fd"):
        save_folder(timm.create_model("resnet18_plain", layers=[1, 1, 1, 1], fd_stages=(4,)), tmp_path / "f")
    for placement in (dict(cas_stages=()), dict(cas_stages=(), fsr_stages=(4,))):  # resnet18_cas without CAS
        with pytest.raises(ValueError, match="is not the network its name says"):
            save_folder(timm.create_model("resnet18_cas", layers=[1, 1, 1, 1], **placement), tmp_path / "f")
    assert not (tmp_path / "f" / "config.json").exists()


@pytest.mark.parametrize("beta", [2.0, 1.0])
def test_the_joint_losses_are_their_authors(beta):
    torch.manual_seed(0)
    out = DefenseOutput(torch.randn(4, 10), (torch.randn(4, 10), torch.randn(4, 10)))
    y = torch.tensor([0, 3, 3, 9])
    ce = [F.cross_entropy(t, y).item() for t in (out.logits, *out.aux_logits)]
    cas = ce[0] + beta * (ce[1] + ce[2]) / 2  # bymavis/CAS_ICLR2021 train.py
    cifs = 3 / (beta + 1) * (ce[0] + beta / 2 * (ce[1] + ce[2]))  # HanshuYAN/CIFS joint_CE_loss
    assert defense_loss("cas", out, y, beta).item() == pytest.approx(cas)
    assert defense_loss("cifs", out, y, beta).item() == pytest.approx(cifs)
    assert defense_loss("cas", out, y, beta, "sum").item() == pytest.approx(4 * cas)
    assert (cas == pytest.approx(cifs)) == (beta == 2.0)  # one loss at the papers' beta
    with pytest.raises(ValueError, match="return_defense=True"):
        defense_loss("cas", DefenseOutput(out.logits, ()), y)


def tiny_defended(name: str) -> nn.Module:
    """A narrow network with stage 4's two blocks (CIFS's nonlinear probe follows the first)."""
    torch.manual_seed(0)
    model = timm.create_model(name, layers=[1, 1, 1, 2], widths=[8, 16, 32, 64])
    randomise_bn(model, BN_SEED)
    return model.eval()


@pytest.mark.parametrize("name", ["resnet18_cas", "resnet18_cifs"])
def test_the_mask_attacks_change_masks_and_gradients_only_inside_their_block(name):
    from fsr_models.evaluation.adaptive import defense_masks

    model = tiny_defended(name)
    with torch.no_grad():  # CIFS's nonlinear probe 3 times its init: a relevance that depends more on the feature
        for m in model.modules():
            if isinstance(m, CIFS) and m.hidden is not None:
                m.hidden.weight.mul_(3)
    x, y = parity_inputs((4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])
    other = (y + 1) % 10
    with torch.no_grad():
        predicted = model(x)
        with defense_masks(model, labels=True):
            labelled = model(x, targets=y)
            assert not torch.equal(labelled, model(x, targets=other))  # the labels choose the masks at eval
            assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
        assert torch.equal(model(x, targets=other), predicted)  # and no more after it
    assert not any(m.training for m in model.modules())

    def input_gradient():
        xg = x.clone().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(model(xg), y), xg)[0]

    with pytest.raises(RuntimeError), defense_masks(model, labels=True, relevance_gradient=True):
        raise RuntimeError  # an attack that fails inside leaves the network as it found it
    cifs = [m for m in model.modules() if isinstance(m, CIFS)]
    assert not any(m.training for m in model.modules()) and not any(m.relevance_gradient for m in cifs)
    authors = input_gradient()
    with defense_masks(model, relevance_gradient=True):
        with torch.no_grad():
            assert torch.equal(model(x), predicted)  # the same network
        full = input_gradient()
    assert torch.equal(input_gradient(), authors)
    if name == "resnet18_cifs":  # the gradient the detach hides
        assert (full - authors).abs().max() > 1e-3 * authors.abs().max()
    else:
        assert torch.equal(full, authors)


@pytest.mark.parametrize("name", ["resnet18_cas", "resnet18_cifs"])
def test_the_mask_attacks_stay_in_the_ball_and_never_report_more_than_pgd20(name):
    from fsr_models.evaluation.protocol import evaluate_attacks

    model = tiny_defended(name)
    x, y = parity_inputs((6, 3, 32, 32)), torch.arange(6)
    result = evaluate_attacks(model, x, y, ["natural", "pgd20", "defense_masks"], eps=16 / 255, progress=False)
    expected = [
        "joint loss",
        "masks of the true class",
        "masks of the likeliest wrong class",
        "heads first, then cross-entropy",
    ]
    expected += ["through the relevance map"] if name == "resnet18_cifs" else []
    assert list(result["candidates"]["defense_masks"]) == expected
    assert result["accuracy"]["defense_masks"] <= result["accuracy"]["pgd20"]
    assert result["settings"]["defense_masks"]["worst_case_with"] == "pgd20"


@pytest.mark.parametrize("name", ["resnet18_cas", "resnet18_cifs"])
def test_the_wrong_class_mask_attack_moves_logits_and_heads_towards_that_class(name):
    """With the masks of the likeliest wrong class, its images lower the joint loss towards that class (a targeted
    attack: the sign matters) far more than a random corner of the eps-ball does, and stay in the ball."""
    from fsr_models.evaluation.adaptive import defense_mask_attacks, defense_masks

    model = tiny_defended(name)
    x, y, eps = parity_inputs((6, 3, 32, 32)), torch.arange(6), 16 / 255
    with torch.no_grad():
        wrong = model(x).scatter(1, y[:, None], float("-inf")).argmax(dim=1)
    x_adv = defense_mask_attacks(model, x, y, eps, 4 / 255, 5)["masks of the likeliest wrong class"]

    def towards_wrong(images: torch.Tensor) -> float:
        with torch.no_grad(), defense_masks(model, labels=True):
            out = model(images, targets=wrong, return_defense=True)
        return defense_loss(name.split("_")[1], out, wrong).item()

    # an untrained network barely responds to its input: compare with a random corner of the same ball
    corner = (x + eps * torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0)) * 2 - eps).clamp(0, 1)
    before = towards_wrong(x)
    assert before - towards_wrong(x_adv) > 10 * abs(before - towards_wrong(corner))
    assert (x_adv - x).abs().max() <= eps + 1e-6


def test_the_adaptive_set_has_the_mask_attacks_where_there_are_masks():
    from fsr_models.evaluate import adaptive_attacks

    cas, attacks = tiny_defended("resnet18_cas"), ["natural", "adaptive"]
    chosen, skipped = adaptive_attacks(attacks, cas, twin=None)
    assert chosen == ["natural", "feature_space", "defense_masks"]
    assert skipped["mask_surrogate"] == "the model has no FSR mask (FSR with a Separation stage)"
    fsr = timm.create_model("resnet18_fsr", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64])
    assert adaptive_attacks(attacks, fsr, twin=None)[1]["defense_masks"] == "the model has no CAS or CIFS mask"
    with pytest.raises(ValueError, match="no CAS or CIFS mask"):
        adaptive_attacks(["defense_masks"], fsr, twin=None)
    # the twin the transfer is crafted on, by default: the same network without the defense
    assert [twin_name(f"{n}.at_cifar10") for n in NAMES] == ["resnet18_plain.at_cifar10"] * 3
