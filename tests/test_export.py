"""python -m fsr_models.export: every network as ONNX and as a torch.export program, computing the PyTorch model's
function (logits within 1e-4 on real images, the same accuracy), with a dynamic batch."""

import re

import pytest
import timm
import torch
from conftest import SHIPPED_FSR

from fsr_models import export
from fsr_models.data import load_cifar10
from fsr_models.facts.networks import ARCHITECTURES

# narrow networks of the same structure (VGG16's 13 convolutions); the command test below exports a full one
SMALL = {
    "resnet18": {"widths": [8, 16, 32, 64]},
    "vgg16": {"stages": [[8, 2], [16, 2], [32, 3], [32, 3], [32, 3]]},
    "wrn34_10": {"depth": 10, "widen_factor": 1},
}


@pytest.mark.parametrize("fmt", export.FORMATS)
@pytest.mark.parametrize("name", [n for pair in ARCHITECTURES.values() for n in pair])
def test_every_network_exports_to_its_own_function(tmp_path, name, fmt):
    torch.manual_seed(0)
    model = timm.create_model(name, **SMALL[name.rsplit("_", 1)[0]]).eval()
    path = export.export(model, tmp_path / "model", fmt)
    x, y = load_cifar10("test", "sample", limit=13)  # an odd batch: the batch dimension is dynamic
    result = export.check_export(model, path, fmt, x, y)
    assert result["passed"] and result["max_abs_logit_difference"] <= 1e-4, result


def test_the_command_exports_the_shipped_weights_and_checks_them(tmp_path, capsys):
    folder = str(SHIPPED_FSR)
    assert export.main([folder, "--out", str(tmp_path / "model.onnx"), "--n", "100"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'model.onnx'} (onnx); on 100 test images" in out
    exported, pytorch = (float(v) for v in re.findall(r"(\d+\.\d+)%", out))
    assert exported == pytorch
    with pytest.raises(SystemExit) as exit_code:  # an existing file is never overwritten
        export.main([folder, "--out", str(tmp_path / "model.onnx")])
    assert exit_code.value.code == 2 and "exists" in capsys.readouterr().err
