"""Write the small naturally trained network that the evaluation tests attack (tests/data/natural_resnet18_fsr/).

    python tests/make_natural_checkpoint.py --data-dir DIR            # DIR: CIFAR-10 as train.npz / test.npz

A ResNet-18-FSR with one block per stage at an eighth of the width (layers 1-1-1-1, widths 8-16-32-64), trained
without attacks (cross-entropy, random flips) on the first 10,000 CIFAR-10 training images for 8 epochs on the CPU
(about 2 minutes on 2 cores). It is well above chance and not robust, which is what the attack tests need:
committed weights make their verdict the same on every machine, where a network trained inside the tests learned
more or less with the machine's floating-point order. The weights are stored in float16 (a few hundred KB); every
loader reads them into the float32 network. Printed at the end: the accuracy on the first 512 test images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import fsr_models  # noqa: F401  (registers the networks)
from fsr_models.data import load_dataset, to_float
from fsr_models.hub.folders import WEIGHTS_NAME, save_folder

OUT = Path(__file__).resolve().parent / "data" / "natural_resnet18_fsr"
TINY = dict(layers=[1, 1, 1, 1], widths=[8, 16, 32, 64])


def train_natural(data_dir: str, seed: int, images: int = 10_000, epochs: int = 8) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model("resnet18_fsr.at_cifar10", **TINY)
    x, y, _ = load_dataset("cifar10", "train", data_dir, images)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=epochs * (len(x) // 64))
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64)[: len(x) // 64]:
            batch = to_float(x[idx])
            batch = torch.where(torch.rand(len(idx), 1, 1, 1) < 0.5, batch.flip(-1), batch)
            optimizer.zero_grad()
            F.cross_entropy(model(batch), y[idx]).backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="a folder with CIFAR-10's train.npz and test.npz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    model = train_natural(args.data_dir, args.seed)
    save_folder(model, args.out)
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_file(half, str(args.out / WEIGHTS_NAME), metadata={"format": "pt"})
    model.load_state_dict(half)  # what every loader reads: the float16 values in the float32 network
    test_x, test_y, _ = load_dataset("cifar10", "test", args.data_dir, 512)
    with torch.no_grad():
        accuracy = (model(to_float(test_x)).argmax(1) == test_y).float().mean().item()
    print(f"{args.out}: natural accuracy {accuracy:.3f} on the first 512 CIFAR-10 test images")


if __name__ == "__main__":
    main()
