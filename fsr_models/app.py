"""An interactive page (Gradio, the Hugging Face Spaces convention): attack a CIFAR-10 image and see what ResNet-18
with FSR and its plain twin make of it, side by side.

    pip install -e ".[app]"
    python app.py            # then open http://127.0.0.1:7860 (the checkout's hub/weights/)
    python -m fsr_models.app [--weights DIR] [--port 7860]

Pick one of the 512 shipped CIFAR-10 test images or upload one (resized to 32x32), eps and the attack. Each model is
attacked white-box, on its own gradients (never a transfer attack): the page shows the clean image, each model's
adversarial image, the top-5 predictions of both models on both, the FSR health figures on the image and the
paper's Figure 1 maps (Grad-CAM of f+, f- and f~- under PGD-20, beside the plain twin's feature). It runs on a CPU
with the trained weights of a folder that holds them (`--weights`: a checkout's hub/weights/), or the Hub's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fsr_models.data import load_cifar10
from fsr_models.evaluation.attacks import pgd
from fsr_models.evaluation.protocol import pgd_settings
from fsr_models.evaluation.report import health_table
from fsr_models.fsr import fsr_health
from fsr_models.hub.folders import checkout_weights, load_any_model
from fsr_models.visualize import figure1

MODELS = {"ResNet-18 + FSR": "resnet18_fsr.at_cifar10", "ResNet-18": "resnet18_plain.at_cifar10"}
ATTACKS = ("PGD-20", "FGSM")
SHOWN_SIZE = 128  # the 32x32 images, upscaled (nearest) so that the page shows their pixels


def load_models(weights: Path | None = None) -> dict[str, torch.nn.Module]:
    """The pair of trained models: each from its folder under `weights` where it is there, else its published tag."""
    models = {}
    for title, name in MODELS.items():
        folder = Path(weights or ".") / name
        try:
            models[title] = load_any_model(str(folder) if folder.is_dir() else name).eval()
        except ValueError as e:  # said as this page is started
            raise ValueError(f"{e}. For the page: --weights names the folder that holds {name}/") from None
    return models


def attack(model, x, y, eps: float, name: str) -> torch.Tensor:
    """The white-box attack `name` on `model` itself (the paper's protocol: no random start, step eps/10)."""
    if name == "FGSM":
        return pgd(model, x, y, eps, eps, 1, random_start=False)
    s = pgd_settings(20, eps)
    return pgd(model, x, y, eps, s["step_size"], s["steps"], s["random_start"])


def top5(model, x, labels) -> dict[str, float]:
    with torch.no_grad():
        probabilities = F.softmax(model(x), 1)[0]
    return {labels[i]: float(p) for i, p in enumerate(probabilities)}


def shown(x: torch.Tensor) -> np.ndarray:
    image = (x[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    return image.repeat(SHOWN_SIZE // 32, 0).repeat(SHOWN_SIZE // 32, 1)


def image_tensor(upload: np.ndarray) -> torch.Tensor:
    """An uploaded RGB image (H, W, 3, uint8) as a 32x32 batch of one in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(upload[..., :3])).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


class Page:
    """What the page computes, apart from its layout: one attack on one image, every output of the page."""

    def __init__(self, models: dict[str, torch.nn.Module] | None = None, weights: Path | None = None):
        self.models = models or load_models(weights)
        self.fsr, self.plain = self.models.values()
        self.labels = list(self.fsr.pretrained_cfg["label_names"])
        self.images, self.targets = load_cifar10("test", "sample")

    def run(self, index: int, upload: np.ndarray | None, eps255: float, attack_name: str) -> list:
        if attack_name not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {attack_name!r}")
        if upload is not None:  # no true class: the attacks push away from the FSR model's own prediction
            x = image_tensor(upload)
            with torch.no_grad():
                y = self.fsr(x).argmax(1)
            truth = f"uploaded image (attacked away from the prediction '{self.labels[y]}')"
        else:
            x, y = self.images[int(index)][None], self.targets[int(index)][None]
            label = self.labels[y]
            truth = f"CIFAR-10 test image {int(index)}, {'an' if label[0] in 'aeiou' else 'a'} {label}"
        eps = float(eps255) / 255
        adversarial = {title: attack(model, x, y, eps, attack_name) for title, model in self.models.items()}
        health = fsr_health(self.fsr, x)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "figure1.png"
            pgd20 = adversarial[next(iter(self.models))] if attack_name == "PGD-20" else None  # the FSR model's
            figure1(self.fsr, x, y, self.labels, path, self.plain, "ResNet-18", eps=eps, x_adv=pgd20)
            maps = np.asarray(Image.open(path).convert("RGB"))
        summary = (
            f"**{truth}**; {attack_name} at eps {float(eps255):g}/255, white-box against each model.\n\n"
            "FSR health on this image (R contribution: what the Recalibration Net adds to f-, relative to f-; 0 means "
            "R is dead):\n\n" + "\n".join(health_table(health))
        )
        predictions = [
            top5(model, images, self.labels)
            for title, model in self.models.items()
            for images in (x, adversarial[title])
        ]
        return [shown(x), *(shown(a) for a in adversarial.values()), *predictions, summary, maps]


def build(page: Page | None = None, weights: Path | None = None):
    """The Gradio page (of `page`, else of the models `load_models(weights)` finds)."""
    import gradio as gr

    page = page or Page(weights=weights)
    fsr_title, plain_title = page.models
    with gr.Blocks(title="fsr-zoo: FSR under attack") as demo:
        gr.Markdown(
            "# FSR under attack\nFeature Separation and Recalibration (Kim et al., CVPR 2023) against its plain twin, "
            "both adversarially trained ResNet-18s of the fsr-zoo. Each model is attacked white-box on its own "
            "gradients. The two were trained with different recipes (their model cards say how), so they show what "
            "each model does, not whether FSR helps."
        )
        with gr.Row():
            index = gr.Slider(0, len(page.images) - 1, value=0, step=1, label="CIFAR-10 test image")
            upload = gr.Image(type="numpy", label="or upload an image (resized to 32x32)", height=160)
            eps = gr.Slider(0, 16, value=8, step=1, label="eps (/255)")
            attack_name = gr.Radio(list(ATTACKS), value=ATTACKS[0], label="white-box attack")
        button = gr.Button("Attack", variant="primary", elem_id="attack")
        with gr.Row():
            images = [
                gr.Image(label=label, height=SHOWN_SIZE + 40)
                for label in ("clean", f"adversarial against {fsr_title}", f"adversarial against {plain_title}")
            ]
        with gr.Row():
            predictions = [
                gr.Label(num_top_classes=5, label=f"{title}, {which}", elem_id=f"{key}-{which}")
                for title, key in ((fsr_title, "fsr"), (plain_title, "plain"))
                for which in ("clean", "adversarial")
            ]
        summary = gr.Markdown(elem_id="summary")
        gr.Markdown("The paper's Figure 1 for this image: Grad-CAM maps of FSR's features under PGD-20")
        maps = gr.Image(show_label=False)
        button.click(page.run, [index, upload, eps, attack_name], [*images, *predictions, summary, maps])
    return demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1")
    parser.add_argument(
        "--weights",
        type=Path,
        default=checkout_weights(),
        help="a folder holding the trained pair's folders (default: hub/weights where run from a checkout)",
    )
    args = parser.parse_args(argv)
    build(weights=args.weights).launch(server_name="127.0.0.1", server_port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
