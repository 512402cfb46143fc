"""A tour of the zoo on real CIFAR-10 images: every network, what FSR computes, and the one folder layout that
timm and transformers both load. Runs offline on a CPU in about a minute.

    python -m fsr_models.tour [--data-dir DIR] [--images N] [--out DIR] [--weights hub/weights]

The registered networks are freshly initialised (chance-level accuracy); trained weights (`--weights`: a folder of
zoo folders, such as a checkout's hub/weights/) are run on the same images. The example folder is temporary unless
--out names one.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForImageClassification

import fsr_models
from fsr_models.data import load_cifar10
from fsr_models.hub.folders import checkout_weights, load_model, save_folder


def size(model: torch.nn.Module, image: torch.Tensor) -> tuple[float, float]:
    """Parameters (M) and GFLOPs per image (2 x multiply-adds of convs and linears, as the paper's Table 7)."""
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        model(image)
    return sum(p.numel() for p in model.parameters()) / 1e6, flops.get_total_flops() / 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", help="folder with CIFAR-10 test.npz (default: $FSR_DATA_DIR or the shipped sample)"
    )
    parser.add_argument("--images", type=int, default=32, help="test images to run (default 32)")
    parser.add_argument("--out", help="where to write the example Hub folder (default: a temporary folder)")
    parser.add_argument(
        "--weights",
        type=Path,
        default=checkout_weights(),
        help="a folder of trained zoo folders to run too (default: hub/weights where run from a checkout)",
    )
    args = parser.parse_args(argv)
    if args.weights and not args.weights.is_dir():
        parser.error(f"--weights {args.weights} is not a folder")
    torch.manual_seed(0)

    x, y = load_cifar10("test", args.data_dir, limit=args.images)
    print(
        f"CIFAR-10 test images: {tuple(x.shape)}, pixels in [{x.min():.2f}, {x.max():.2f}], labels {y[:8].tolist()}..."
    )
    print(f"Pretrained weights of a tag come from the Hub, {fsr_models.HF_ORG}/<architecture>.<tag>\n")

    print(f"{'model':<16} {'params (M)':>10} {'GFLOPs':>8} {'top-1 (untrained)':>18}")
    for fsr_name, plain_name in fsr_models.ARCHITECTURES.values():
        for name in (plain_name, fsr_name):
            model = timm.create_model(name).eval()
            params, gflops = size(model, x[:1])
            with torch.no_grad():
                acc = (model(x).argmax(1) == y).float().mean().item()
            print(f"{name:<16} {params:>10.2f} {gflops:>8.4f} {acc:>18.1%}")

    print("\nInside resnet18_fsr (FSR after layer4, 512 x 4 x 4):")
    model = timm.create_model("resnet18_fsr").eval()
    with torch.no_grad():
        out = model(x, return_fsr=True)
        parts = out.fsr_parts[0]
        print(
            f"  eval mask m = sigmoid(r / tau): mean {parts.mask.mean():.3f}, "
            f"share > 0.5 {(parts.mask > 0.5).float().mean():.3f}"
        )
        print(f"  eval forward twice, identical logits: {torch.equal(model(x), model(x))}")
        model.train()
        train_masks = model(x, return_fsr=True).fsr_parts[0].mask, model(x, return_fsr=True).fsr_parts[0].mask
        print(f"  train masks of two passes differ (Gumbel noise): {not torch.equal(*train_masks)}")
        model.eval()
        losses = fsr_models.FSRLoss.for_model(model).terms(out, y)
    print(f"  FSR losses on this batch (Eq. 3-5): L_sep {losses['sep']:.3f}, L_rec {losses['rec']:.3f}")

    if args.weights:
        print(f"\nTrained weights in {args.weights}, on the same {len(x)} images:")
        for weights in sorted(p for p in args.weights.iterdir() if (p / "config.json").is_file()):
            with torch.no_grad():
                acc = (load_model(weights).eval()(x).argmax(1) == y).float().mean().item()
            print(f"  {weights.name:<28} top-1 {acc:.1%}")

    with tempfile.TemporaryDirectory(prefix="fsr-zoo-") as scratch:
        show_loaders(model, x, args.out or scratch)


def show_loaders(model: torch.nn.Module, x: torch.Tensor, folder: str) -> None:
    """Save `model` as a zoo folder and load it back with each loader: the same logits."""
    save_folder(model, folder)
    with torch.no_grad():
        reference = model(x)
        by_timm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()(x)
        by_load_model = load_model(folder).eval()(x)
        by_transformers = AutoModelForImageClassification.from_pretrained(folder).eval()(x).logits
    print("  (the auxiliary head h of the losses lives in fsr_models.FSRLoss: 5,130 parameters at 10 classes)")
    print(f"\nSaved {folder}/config.json + model.safetensors; the same logits from")
    print(f"  timm.create_model('local-dir:{folder}', pretrained=True): {torch.equal(by_timm, reference)}")
    print(f"  AutoModelForImageClassification.from_pretrained('{folder}'): {torch.equal(by_transformers, reference)}")
    print(f"  fsr_models.hub.folders.load_model('{folder}'): {torch.equal(by_load_model, reference)}")


if __name__ == "__main__":
    main()
