"""transformers' image-classification pipeline and AutoImageProcessor on the zoo's folders: PIL images in, label names
out, with the preprocessing the networks were trained with (resize to the input size, x / 255, no normalisation)."""

import json
import logging

import numpy as np
import pytest
import timm
import torch
from conftest import SHIPPED_PLAIN as PLAIN
from PIL import Image
from transformers import AutoImageProcessor, pipeline

from fsr_models.datasets import SAMPLES
from fsr_models.hf import FSRConfig, image_processor
from fsr_models.hub import IMAGE_PROCESSOR_NAME, save_folder


@pytest.fixture(scope="module")
def real_images():
    """The first 50 real CIFAR-10 test images (uint8 HWC, from the shipped sample) and their labels."""
    with np.load(SAMPLES["test"]) as arrays:
        return arrays["x"][:50], arrays["y"][:50].astype(int)


def test_pipeline_classifies_real_images_with_label_names(real_images, caplog):
    x, y = real_images
    logging.Logger.warning_once.cache_clear()  # transformers warns once per process: let this pipeline warn again
    with caplog.at_level(logging.WARNING):
        classify = pipeline("image-classification", model=str(PLAIN))
    assert "backend is not available" not in caplog.text  # the processor of the backend it asks for is registered
    names = json.loads((PLAIN / "config.json").read_text())["label_names"]
    top = [result[0]["label"] for result in classify([Image.fromarray(a) for a in x], top_k=1)]
    assert set(top) <= set(names) and "cat" in names
    assert sum(label == names[i] for label, i in zip(top, y)) >= 30  # 60% of 50; the weights reach 79.5% on 1,000


def test_image_processor_gives_the_pixels_the_network_was_trained_on(real_images):
    x, _ = real_images
    processor = AutoImageProcessor.from_pretrained(PLAIN)
    pixels = processor([Image.fromarray(a) for a in x], return_tensors="pt")["pixel_values"]
    expected = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    # x * (1/255) in float32, as the processor rescales, is x / 255 to within one rounding step (2**-24 below 1)
    torch.testing.assert_close(pixels, expected, rtol=0, atol=2**-24)


def test_processor_follows_the_input_size_of_the_tag(tmp_path):
    tiny = timm.create_model("resnet18_fsr.at_tiny_imagenet", widths=[8, 16, 32, 64])
    processor = image_processor(FSRConfig.from_timm_model(tiny))
    assert processor.size == {"height": 64, "width": 64} and not processor.do_normalize
    image = Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8))
    assert processor(image, return_tensors="pt")["pixel_values"].shape == (1, 3, 64, 64)
    save_folder(tiny, tmp_path)  # every saved folder carries its processor
    assert json.loads((tmp_path / IMAGE_PROCESSOR_NAME).read_text())["size"] == {"height": 64, "width": 64}
