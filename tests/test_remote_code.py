"""The code a Hub repository carries for `trust_remote_code=True` (fsr_models/hf/remote, with the package's own
fsr_core.py beside it): torch and transformers only, published as the package holds it, and the same function as the
package's networks for every backbone and FSR setting. It is loaded here from folders by transformers' loader of remote
code, as users get it; loading it through a Hub API in an environment without fsr_models is tested in test_publish.py.
"""

import inspect
import json
import shutil
import sys
from pathlib import Path

import pytest
import timm
import torch
from conftest import SHIPPED_FSR, SMALL_RESNET, trained_looking
from transformers.dynamic_module_utils import get_class_from_dynamic_module, get_imports, get_relative_imports

from fsr_models.facts.networks import BACKBONES, DEFENSES
from fsr_models.fsr import fsr_core
from fsr_models.hub.folders import load_model, save_folder
from fsr_models.hub.repository import (
    AUTO_MAP,
    REMOTE_CODE_SOURCES,
    PublishError,
    check_repo_folder,
    export_repo,
    remote_model_class,
    write_remote_code,
)


@pytest.fixture(scope="module")
def remote_code(tmp_path_factory) -> Path:
    """A folder holding the code for trust_remote_code=True alone."""
    folder = tmp_path_factory.mktemp("remote_code")
    write_remote_code(folder)
    return folder


def test_remote_code_imports_only_torch_and_transformers():
    # transformers' own check (check_imports) refuses a repository whose code imports a package that is missing
    def packages(name):
        return set(get_imports(REMOTE_CODE_SOURCES[name])) - set(sys.stdlib_module_names)

    assert packages("configuration_fsr.py") == packages("image_processing_fsr.py") == {"transformers"}
    assert packages("modeling_fsr.py") == {"torch", "transformers"}
    for name in ("fsr_core.py", "cas.py", "cifs.py", "fd.py"):
        assert packages(name) == {"torch"}, name


def test_what_the_remote_code_imports_relatively_is_published_beside_it():
    # transformers fetches a relatively imported module from the repository: fsr_core must import nothing of fsr_models
    imported = {name: {f"{m}.py" for m in get_relative_imports(src)} for name, src in REMOTE_CODE_SOURCES.items()}
    assert imported == {
        "configuration_fsr.py": {"fsr_core.py"},
        "modeling_fsr.py": {"configuration_fsr.py", "fsr_core.py", "cas.py", "cifs.py", "fd.py"},
        "image_processing_fsr.py": set(),
        "fsr_core.py": set(),
        "cas.py": set(),
        "cifs.py": set(),
        "fd.py": set(),
    }


def test_an_exported_repository_carries_the_packages_fsr_core_and_computes_with_it(tmp_path):
    folder = export_repo(SHIPPED_FSR, tmp_path / "repository")
    assert REMOTE_CODE_SOURCES["fsr_core.py"] == Path(fsr_core.__file__)  # the package's module is the source
    for name, source in REMOTE_CODE_SOURCES.items():
        assert (folder / name).read_bytes() == source.read_bytes(), name
    # the remote model's FSR is the folder's copy of fsr_core, loaded by transformers, not the package's module
    fsr_class = sys.modules[remote_model_class(folder).__module__].FSR
    assert (
        fsr_class is not fsr_core.FSR
        and Path(inspect.getfile(fsr_class)).read_bytes() == (folder / "fsr_core.py").read_bytes()
    )
    with (folder / "fsr_core.py").open("a") as f:  # a copy that is not the package's is never published
        f.write("\n# edited\n")
    with pytest.raises(PublishError, match=r"\(fsr_core.py\) is not this version's"):
        check_repo_folder(folder)


def test_the_paper_fsr_positions_are_the_facts():
    assert fsr_core.PAPER_FSR_STAGES == {key: backbone.fsr_stages for key, backbone in BACKBONES.items()}


def test_the_remote_defense_positions_are_the_registered_networks(remote_code):
    config_module = sys.modules[get_class_from_dynamic_module(AUTO_MAP["AutoConfig"], str(remote_code)).__module__]
    registered = {d: getattr(timm.create_model(f"resnet18_{d}"), f"{d}_stages") for d in DEFENSES}
    assert config_module.DEFENSE_STAGES == registered == {"cas": (4,), "cifs": (4,), "fd": (1, 2, 3, 4)}


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
        ("resnet18_cas", SMALL_RESNET),
        ("resnet18_cas", dict(SMALL_RESNET, cas_stages=[3, 4])),
        ("resnet18_cifs", dict(SMALL_RESNET, layers=[2, 2, 2, 2])),  # a nonlinear probe, then a linear one
        ("resnet18_fd", SMALL_RESNET),
        ("resnet18_fd", dict(SMALL_RESNET, fd_stages=[4])),
    ],
)
def test_remote_code_computes_the_packages_logits_from_the_same_weights(name, args, remote_code, tmp_path):
    torch.manual_seed(0)
    model = trained_looking(timm.create_model(name, **args))
    save_folder(model, tmp_path)
    remote = remote_model_class(remote_code).from_pretrained(tmp_path).eval()
    x = torch.rand(3, model.in_chans, 32, 32)
    with torch.no_grad():
        assert torch.equal(remote(pixel_values=x).logits, model(x))
    assert remote.num_parameters() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, missing",
    [
        ("resnet18_fsr.at_cifar10", "left out"),  # the shipped weights
        ("resnet18_fsr.at_cifar10", None),
        ("vgg16_fsr", None),
        ("wrn34_10_fsr", "left out"),
        ("resnet18_cifs", None),  # no fsr_stages: still no FSR beside the defense
        ("resnet18_fd", "left out"),  # nor defense_stages: after each stage
    ],
)
def test_a_config_without_backbone_args_is_the_papers_network(name, missing, tmp_path):
    """config.json without backbone_args (and fsr_stages, defense_stages): the remote code's defaults, the paper's
    network and FSR position (the zoo's defense position), which are the package's."""
    if name == "resnet18_fsr.at_cifar10":
        model = load_model(SHIPPED_FSR).eval()
        for file in ("config.json", "model.safetensors"):
            shutil.copyfile(SHIPPED_FSR / file, tmp_path / file)
    else:
        torch.manual_seed(0)
        model = trained_looking(timm.create_model(name))
        save_folder(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("backbone_args", "fsr_stages", *(["defense_stages"] if "defense" in config else [])):
        if missing == "left out":
            del config[key]
        else:
            config[key] = None
    (tmp_path / "config.json").write_text(json.dumps(config))
    write_remote_code(tmp_path)
    remote = remote_model_class(tmp_path).from_pretrained(tmp_path).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(remote(pixel_values=x).logits, model(x))


def test_remote_code_refuses_what_it_does_not_implement(remote_code):
    config_class = get_class_from_dynamic_module(AUTO_MAP["AutoConfig"], str(remote_code))
    with pytest.raises(ValueError, match="backbone must be one of"):
        config_class(backbone="resnet50")
    with pytest.raises(ValueError, match="fsr_tau must be positive"):  # the package's check, in fsr_core
        config_class(fsr_tau=0)
    with pytest.raises(ValueError, match="defense must be one of .* in resnet18 without FSR"):
        config_class(backbone="vgg16", defense="cas")
    with pytest.raises(ValueError, match="defense must be one of"):
        config_class(defense="cas", fsr_stages=[4])
    config = config_class(backbone_args=dict(SMALL_RESNET, global_pool="max"))
    with pytest.raises(ValueError, match="load it with the fsr-zoo package"):
        remote_model_class(remote_code)(config)
