"""The interactive page (fsr_models/app.py): what it computes, and the page itself in headless Chromium."""

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the page needs the app extra: pip install -e .[app]")

from conftest import ZOO  # noqa: E402

from fsr_models import app  # noqa: E402


@pytest.fixture(scope="module")
def page():
    return app.Page(weights=ZOO)


def test_one_attack_gives_every_output_of_the_page(page):
    outputs = page.run(0, None, 8, "PGD-20")
    clean, adversarial_fsr, adversarial_plain, *predictions, summary, maps = outputs
    assert [a.shape for a in (clean, adversarial_fsr, adversarial_plain)] == [(app.SHOWN_SIZE, app.SHOWN_SIZE, 3)] * 3
    # each model attacked on its own gradients: the two adversarial images differ, within 8/255 of the clean one
    assert not np.array_equal(adversarial_fsr, adversarial_plain)
    assert np.abs(adversarial_fsr.astype(int) - clean.astype(int)).max() <= 8
    assert len(predictions) == 4 and all(len(p) == 10 and abs(sum(p.values()) - 1) < 1e-4 for p in predictions)
    fsr_clean, fsr_adversarial, plain_clean, plain_adversarial = predictions
    assert fsr_adversarial["cat"] < fsr_clean["cat"] and plain_adversarial["cat"] < plain_clean["cat"]  # image 0: a cat
    assert "CIFAR-10 test image 0, a cat" in summary and "| fsr4 |" in summary
    assert maps.ndim == 3 and maps.shape[2] == 3 and maps.shape[1] > 3 * maps.shape[0]  # one row of six panels


def test_an_uploaded_image_is_resized_and_attacked_away_from_the_prediction(page):
    upload = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    clean, *_, summary, _ = page.run(0, upload, 4, "FGSM")
    assert clean.shape == (app.SHOWN_SIZE, app.SHOWN_SIZE, 3) and "uploaded image" in summary
    with pytest.raises(ValueError, match="attack must be one of"):
        page.run(0, None, 8, "CW")


def test_the_page_runs_an_attack_in_headless_chromium(page, tmp_path):
    pytest.importorskip("selenium", reason="the browser test needs selenium: pip install -e .[test]")
    import browser

    try:
        browser.chromedriver()
    except FileNotFoundError as e:
        pytest.skip(f"Chromium is not installed here ({e}): `make chromium` installs it where apt-get can")
    texts = browser.screenshot(tmp_path / "page.png", page)
    assert "CIFAR-10 test image 0, a cat" in texts["summary"] and "fsr4" in texts["summary"]
    for key in ("fsr-clean", "fsr-adversarial", "plain-clean", "plain-adversarial"):
        assert "cat" in texts[key] and "%" in texts[key], key  # the rendered top-5 list
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
