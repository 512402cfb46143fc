"""Records the authors' outputs that tests/test_defenses.py compares the zoo's CAS, CIFS and Feature Denoising with,
into authors_outputs.safetensors beside this file. Not run by the test suite: it needs the authors' code, which may
not be copied into fsr-zoo (CAS and CIFS carry no licence, FD is CC BY-NC), on the path given as its argument:

    python tests/data/defenses/record.py DIR

DIR holds `ref/cas/resnet_cas.py` (github.com/bymavis/CAS_ICLR2021 @ 057fc636a30e44efbb638e3d6b665ced4d8025fb,
Standard_Adv_Training/models/resnet_cas.py), `ref/cifs/{resnet,resnet_CIFS}.py` (github.com/HanshuYAN/CIFS @
2e68025c04f6955d94654b64aa1ac019f1e54d19, models/nets/) with `__init__.py` files making `ref` a package, and
`impl/parity.py`, whose `tf_denoising_numpy` transliterates the authors' TensorFlow denoising op
(github.com/facebookresearch/ImageNet-Adversarial-Training @ 1ad68f08b8533083b0b8823ac3fd85cede191646,
resnet_model.py:81-122) to numpy: TensorFlow 1 and tensorpack do not run here.

The zoo's networks are built from the tests' seeds and their weights copied into the authors' models, so the file
holds only those models' outputs (a few tens of KB): the tests rebuild the same weights and inputs from the seeds.
"""

import re
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

TESTS = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TESTS))
from test_defenses import (  # noqa: E402
    FD_SHAPE,
    FIXTURE,
    LABELS,
    joint_loss,
    parity_inputs,
    seeded_denoising_block,
    seeded_network,
)


def authors_names(state: dict, probe_names: bool) -> dict:
    """The zoo's ResNet-18 state dict under the authors' names: `linear` for `fc`, `shortcut` for `downsample`,
    layer4's defense inside its block (CAS: `fc`; CIFS: `Probe.Probe.0.fc` hidden, `Probe.Probe.1` classifier)."""
    renamed = {}
    for key, value in state.items():
        key = re.sub(r"^fc\.", "linear.", key).replace(".downsample.", ".shortcut.").replace(".block.", ".")
        if probe_names:
            key = key.replace(".defense.hidden.", ".Probe.Probe.0.fc.").replace(".defense.fc.", ".Probe.Probe.1.")
        renamed[key.replace(".defense.", ".")] = value
    return renamed


def record_model(key: str, ours: torch.nn.Module, evaluate, train, probe_names: bool, authors_model) -> dict:
    """Eval mode: logits, auxiliary logits and the input gradient of the joint loss; train mode with the labels:
    logits, auxiliary logits and the norm of the joint loss's gradient for each parameter, in our parameters' order."""
    authors_model.load_state_dict(authors_names(ours.state_dict(), probe_names))
    x, targets = parity_inputs().requires_grad_(True), torch.tensor(LABELS)
    logits, aux = evaluate(authors_model, x)
    (grad,) = torch.autograd.grad(joint_loss(logits, aux, targets), x)
    out = {f"{key}.eval.logits": logits, f"{key}.eval.input_grad": grad}
    out.update({f"{key}.eval.aux{i}": a for i, a in enumerate(aux)})
    logits, aux = train(authors_model, x, targets)
    theirs = dict(authors_model.named_parameters())
    names = list(authors_names(dict(ours.named_parameters()), probe_names))
    grads = torch.autograd.grad(joint_loss(logits, aux, targets), [theirs[n] for n in names])
    out[f"{key}.train.logits"] = logits
    out[f"{key}.train.param_grad_norms"] = torch.stack([g.norm() for g in grads])
    out.update({f"{key}.train.aux{i}": a for i, a in enumerate(aux)})
    return {k: v.detach().contiguous() for k, v in out.items()}


def record_cas() -> dict:
    from ref.cas.resnet_cas import ResNet18

    # Their forward switches the mode itself: _eval=True is their attacks' and tests' setting
    return record_model(
        "cas",
        seeded_network("resnet18_cas"),
        lambda m, x: m(x, None, _eval=True),
        lambda m, x, y: m(x, y, _eval=False),
        probe_names=False,
        authors_model=ResNet18(num_classes=10),
    )


def record_cifs() -> dict:
    from ref.cifs.resnet_CIFS import ResNet18_L4

    return record_model(
        "cifs",
        seeded_network("resnet18_cifs"),
        lambda m, x: m.eval()(x),
        lambda m, x, y: m.train()(x, y),
        probe_names=True,
        authors_model=ResNet18_L4(),
    )


def record_fd() -> dict:
    from impl.parity import tf_denoising_numpy

    block = seeded_denoising_block()
    x = parity_inputs(FD_SHAPE, torch.float64).numpy()
    weights = [m.weight.detach()[:, :, 0, 0].numpy() for m in (block.theta, block.phi, block.conv)]
    bn = [t.detach().numpy() for t in (block.bn.weight, block.bn.bias, block.bn.running_mean, block.bn.running_var)]
    return {
        f"fd.{mode}.block": torch.from_numpy(tf_denoising_numpy(x, *weights, (*bn, block.bn.eps), True, True, training))
        for mode, training in (("eval", False), ("train", True))
    }


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    torch.use_deterministic_algorithms(True)
    save_file({**record_cas(), **record_cifs(), **record_fd()}, FIXTURE)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
