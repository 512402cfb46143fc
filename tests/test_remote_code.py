"""The code a Hub repository carries for `trust_remote_code=True` (fsr_models/hf/remote): self-contained, and the
same function as the package's networks for every backbone and FSR setting. Loading it through a Hub API in an
environment without fsr_models is tested in test_publish.py."""

import sys

import pytest
import timm
import torch
from transformers.dynamic_module_utils import get_imports

from fsr_models.hf.remote import configuration_fsr, image_processing_fsr, modeling_fsr
from fsr_models.hub import save_folder


def test_remote_code_imports_only_torch_and_transformers():
    # transformers' own check (check_imports) refuses a repository whose code imports a package that is missing
    def packages(module):
        return set(get_imports(module.__file__)) - set(sys.stdlib_module_names)

    assert packages(configuration_fsr) == packages(image_processing_fsr) == {"transformers"}
    assert packages(modeling_fsr) == {"torch", "transformers"}


SMALL_RESNET = dict(layers=[1, 1, 1, 1], widths=[8, 16, 32, 64])
SMALL_VGG = dict(stages=[[8, 1], [16, 1], [32, 2], [64, 2], [64, 1]])
SMALL_WRN = dict(depth=10, widen_factor=1)


@pytest.mark.parametrize(
    "name, args",
    [
        ("resnet18_fsr", SMALL_RESNET),
        ("resnet18_plain", SMALL_RESNET),
        ("resnet18_fsr", dict(SMALL_RESNET, fsr_stages=[2, 4], fsr_tau=0.5, in_chans=1)),
        ("resnet18_fsr", dict(SMALL_RESNET, fsr_separation=False)),  # w/o Sep
        ("resnet18_fsr", dict(SMALL_RESNET, fsr_recalibration=False)),  # w/o Rec
        ("resnet18_fsr", dict(SMALL_RESNET, fsr_output="f_neg_recal")),
        ("vgg16_fsr", SMALL_VGG),
        ("vgg16_plain", dict(SMALL_VGG, num_classes=100)),
        ("wrn34_10_fsr", dict(SMALL_WRN, fsr_stages=[1, 3])),
        ("wrn34_10_plain", SMALL_WRN),
    ],
)
def test_remote_code_computes_the_packages_logits_from_the_same_weights(name, args, tmp_path):
    torch.manual_seed(0)
    model = timm.create_model(name, **args)
    with torch.no_grad():  # batch statistics that are not the identity, so that BN's running stats count
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    save_folder(model, tmp_path)
    remote = modeling_fsr.FSRForImageClassification.from_pretrained(tmp_path).eval()
    x = torch.rand(3, model.in_chans, 32, 32)
    with torch.no_grad():
        assert torch.equal(remote(pixel_values=x).logits, model.eval()(x))
    assert remote.num_parameters() == sum(p.numel() for p in model.parameters())


def test_remote_code_refuses_what_it_does_not_implement():
    with pytest.raises(ValueError, match="backbone must be one of"):
        configuration_fsr.FSRConfig(backbone="resnet50")
    config = configuration_fsr.FSRConfig(backbone_args=dict(SMALL_RESNET, global_pool="max"))
    with pytest.raises(ValueError, match="load it with the fsr-zoo package"):
        modeling_fsr.FSRForImageClassification(config)
