"""The paper's Figure 1 for any FSR model: Grad-CAM attention maps (Selvaraju et al., the paper's ref. [40]) of the
features FSR works with, on a natural image and on its PGD-20 adversarial version.

    python -m fsr_models.visualize MODEL --data-dir DIR|sample --images 0 5 17 --out figure1.png [--reference-model M]

Per image, one row: the natural image, its adversarial version (PGD-20, eps 8/255, the paper's protocol), the map of
a reference network's final feature f on the natural image (with --reference-model: the paper draws a naturally
trained network there; the zoo's plain weights are adversarially trained, and the column's title names the network
drawn), then the maps of FSR's robust feature f+, non-robust feature f- and recalibrated
non-robust feature f~- on the adversarial image, overlaid on it. Titles give the predictions and the mean of the
separation mask m. The maps are those of the last FSR module (4x4 for ResNet-18 and VGG16, 8x8 for WRN-34-10 at
32x32), upsampled bilinearly. A model whose Recalibration Net is dead shows it: its f~- map is its f- map.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from fsr_models.data import load_dataset, to_float
from fsr_models.evaluation.attacks import pgd
from fsr_models.evaluation.protocol import pgd_settings
from fsr_models.facts.paper import PAPER_EPS
from fsr_models.hub.folders import load_any_model

PARTS = ("f_pos", "f_neg", "f_neg_recal")
PART_TITLES = {
    "f_pos": "f+ (robust)",
    "f_neg": "f- (non-robust)",
    "f_neg_recal": "f~- (recal.)",
}


def grad_cam(feature: torch.Tensor, gradient: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Grad-CAM: ReLU of the feature's channels weighted by their mean gradient, upsampled to `size` and scaled to
    [0, 1] per image (all zero where nothing contributes). (N, C, h, w) -> (N, H, W)."""
    cam = F.relu((gradient.mean(dim=(2, 3), keepdim=True) * feature).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return cam / peak


def fsr_maps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The Grad-CAM maps (N, H, W) of f+, f- and f~- of the model's last FSR module for the class scores of `y`, the
    predictions, and the mask's mean per image."""
    model.eval()
    out = model(x, return_fsr=True)
    parts = out.fsr_parts[-1]
    features = {name: getattr(parts, name) for name in PARTS if getattr(parts, name) is not None}
    score = out.logits.gather(1, y[:, None]).sum()
    gradients = torch.autograd.grad(score, list(features.values()))
    maps = {name: grad_cam(f.detach(), g, x.shape[2:]) for (name, f), g in zip(features.items(), gradients)}
    return {**maps, "prediction": out.logits.argmax(1).detach(), "mask_mean": parts.mask.detach().mean((1, 2, 3))}


def natural_map(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The Grad-CAM map of a network's final feature (forward_features' output) for the class scores of `y`."""
    model.eval()
    feature = model.forward_features(x)
    logits = model.forward_head(feature)
    (gradient,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), [feature])
    return {"f": grad_cam(feature.detach(), gradient, x.shape[2:]), "prediction": logits.argmax(1).detach()}


def figure1(
    model,
    x,
    y,
    labels,
    path: str | Path,
    reference_model=None,
    reference_name="reference model",
    eps=PAPER_EPS,
    x_adv=None,
):
    """Draw the figure for the images x (float, [0, 1]) with labels y into `path` (PNG); returns what it drew (the
    maps, the adversarial images, the columns, and the matplotlib Figure).
    `reference_name` names `reference_model` in its column's title; `x_adv`, the PGD-20 images when already made."""
    from matplotlib.figure import Figure  # no pyplot: nothing to display, Agg renders the file

    if x_adv is None:
        s = pgd_settings(20, eps)
        x_adv = pgd(model.eval(), x, y, eps, s["step_size"], s["steps"], s["random_start"])
    adversarial = fsr_maps(model, x_adv, y)
    with torch.no_grad():
        clean_prediction = model(x).argmax(1)
    natural = natural_map(reference_model, x, y) if reference_model is not None else None
    columns = ["natural", "adversarial", *(["f"] if natural else []), *(p for p in PARTS if p in adversarial)]
    fig = Figure(figsize=(2.1 * len(columns), 2.3 * len(x)), layout="constrained")
    axes = fig.subplots(len(x), len(columns), squeeze=False)
    name = lambda i: labels[i] if labels else str(i)  # noqa: E731
    for row in range(len(x)):
        image, adv = (t[row].permute(1, 2, 0).numpy() for t in (x, x_adv.detach()))
        for col, what in enumerate(columns):
            ax = axes[row][col]
            ax.axis("off")
            if what == "natural":
                ax.imshow(image, interpolation="nearest")
                title = f"{name(y[row])}\npredicted {name(clean_prediction[row])}"
            elif what == "adversarial":
                ax.imshow(adv, interpolation="nearest")
                title = f"PGD-20\npredicted {name(adversarial['prediction'][row])}"
            else:
                ax.imshow(image if what == "f" else adv, interpolation="nearest")
                source = natural if what == "f" else adversarial
                ax.imshow(source[what][row].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
                title = f"f ({reference_name})" if what == "f" else PART_TITLES[what]
                if what == "f":
                    title += f"\npredicted {name(natural['prediction'][row])}"
                elif what == "f_pos":
                    title += f"\nmean mask {adversarial['mask_mean'][row]:.2f}"
            ax.set_title(title, fontsize=8)
    fig.savefig(path, dpi=150)
    return {"columns": columns, "adversarial": adversarial, "natural": natural, "x_adv": x_adv.detach(), "figure": fig}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="an FSR model: a zoo folder, a run folder, hf-hub:<id> or a published tag")
    parser.add_argument("--data-dir", default="sample", help="CIFAR-10 folder, or 'sample' (default)")
    parser.add_argument("--images", type=int, nargs="+", default=[0, 1, 2, 3], help="test image indices")
    parser.add_argument(
        "--reference-model", help="a second network for the map of f (the paper: a naturally trained one; default none)"
    )
    parser.add_argument("--out", type=Path, default=Path("figure1.png"), help="the PNG to write")
    args = parser.parse_args(argv)
    try:
        model = load_any_model(args.model)
        if not model.fsr_modules():
            raise ValueError(f"{args.model} has no FSR module: Figure 1 shows FSR's features")
        natural = load_any_model(args.reference_model) if args.reference_model else None
        images, targets, labels = load_dataset("cifar10", "test", args.data_dir, max(args.images) + 1)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    index = torch.tensor(args.images)
    reference_name = Path(args.reference_model.removeprefix("local-dir:")).name if natural else ""
    figure1(model, to_float(images[index]), targets[index], labels, args.out, natural, reference_name)
    print(f"wrote {args.out}: test images {args.images}, columns natural, PGD-20, maps of the FSR features")
    return 0


if __name__ == "__main__":
    sys.exit(main())
