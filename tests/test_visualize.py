"""python -m fsr_models.visualize: the paper's Figure 1 (Grad-CAM maps of f+, f- and f~- on adversarial images)."""

import numpy as np
import pytest
import timm
import torch
from conftest import SHIPPED_FSR, SHIPPED_PLAIN
from PIL import Image

from fsr_models import visualize
from fsr_models.data import load_cifar10

SMALL = {"resnet18": {"layers": [1, 1, 1, 1], "widths": [8, 16, 32, 64]}, "vgg16": {}, "wrn34_10": {"depth": 10}}


def tiny(name="resnet18_fsr"):
    torch.manual_seed(0)
    return timm.create_model(name, **SMALL[name.rsplit("_", 1)[0]]).eval()


@pytest.mark.parametrize("name", ["resnet18_fsr", "vgg16_fsr", "wrn34_10_fsr"])  # 4x4, 4x4 and 8x8 features
def test_maps_are_image_sized_in_0_1_and_differ_where_the_mask_separates(name):
    x, y = load_cifar10("test", "sample", limit=3)
    maps = visualize.fsr_maps(tiny(name), x, y)
    for part in visualize.PARTS:
        assert maps[part].shape == (3, 32, 32) and 0 <= maps[part].min() and maps[part].max() <= 1
    assert not torch.allclose(maps["f_pos"], maps["f_neg"])  # the mask splits the feature: two different maps
    assert maps["prediction"].shape == (3,) and ((0 < maps["mask_mean"]) & (maps["mask_mean"] < 1)).all()


def test_a_dead_recalibration_net_shows_as_identical_maps_of_f_neg_and_its_recalibration():
    model = tiny()
    with torch.no_grad():
        for p in model.fsr_modules()[-1].recalibration_net.parameters():
            p.zero_()  # R(f-) = 0: f~- = f-
    x, y = load_cifar10("test", "sample", limit=2)
    maps = visualize.fsr_maps(model, x, y)
    torch.testing.assert_close(maps["f_neg_recal"], maps["f_neg"])


def test_the_figure_is_written_with_a_column_per_feature(tmp_path):
    x, y = load_cifar10("test", "sample", limit=2)
    drawn = visualize.figure1(tiny(), x, y, None, tmp_path / "a.png", reference_model=tiny("resnet18_plain"))
    assert drawn["columns"] == ["natural", "adversarial", "f", "f_pos", "f_neg", "f_neg_recal"]
    assert drawn["natural"]["f"].shape == (2, 32, 32)
    # what is drawn: 2 rows of 6 panels; each map column over its image, as the maps hold them
    axes = drawn["figure"].axes
    assert len(axes) == 12
    for row in range(2):
        for col, what in enumerate(drawn["columns"]):
            images = axes[row * 6 + col].images
            shown = drawn["x_adv"][row] if col and what != "f" else x[row]
            assert np.array_equal(images[0].get_array(), shown.permute(1, 2, 0).numpy())
            if col >= 2:
                maps = drawn["natural"] if what == "f" else drawn["adversarial"]
                assert np.array_equal(images[1].get_array(), maps[what][row].numpy())
    with Image.open(tmp_path / "a.png") as png:
        assert png.format == "PNG" and png.size == (int(2.1 * 6 * 150), int(2.3 * 2 * 150))


def test_the_command_draws_the_shipped_model_and_refuses_a_plain_one(tmp_path, capsys):
    out = tmp_path / "figure1.png"
    assert visualize.main([str(SHIPPED_FSR), "--images", "0", "3", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000 and f"wrote {out}" in capsys.readouterr().out
    assert visualize.main([str(SHIPPED_PLAIN), "--out", str(tmp_path / "b.png")]) == 2
    assert "has no FSR module" in capsys.readouterr().err
