"""Export a zoo network for inference: ONNX (onnxruntime and the runtimes that read ONNX) or a torch.export program.

    python -m fsr_models.export MODEL --format onnx --out model.onnx [--data-dir sample|DIR] [--n 512]
    python -m fsr_models.export MODEL --format torch-export --out model.pt2

MODEL is a zoo folder, a training run folder, hf-hub:<id> or a registered tag with published weights. The exported
graph is the network in eval mode (FSR's deterministic mask sigmoid(r / tau)) with a dynamic batch dimension: input
`pixel_values` (N, 3, H, W), RGB in [0, 1] without normalisation; output `logits`. It is for inference only: attacks
and the robustness evaluation need the PyTorch model, whose gradients they follow.

The written file is checked as timm's onnx_validate checks an export: on the first --n test images of --data-dir
(the shipped CIFAR-10 sample by default) its logits must equal PyTorch's within 1e-4 and its accuracy must equal the
model's. A failed check exits with code 1 and keeps the file; a user error is one line `error: ...` and exit code 2.
ONNX needs the optional extra: pip install "fsr-models[export]".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from fsr_models.cli import Parser
from fsr_models.data import load_dataset, to_float
from fsr_models.hub.folders import load_any_model

FORMATS = ("onnx", "torch-export")
TOLERANCE = 1e-4  # timm's onnx_validate: the largest difference of a logit


def export(model: torch.nn.Module, path: str | Path, fmt: str = "onnx") -> Path:
    """Write `model` (a zoo network built by timm) as an inference graph with a dynamic batch dimension."""
    model = model.eval()
    example = (torch.rand(2, *model.pretrained_cfg["input_size"]),)
    batch = {0: torch.export.Dim("batch", min=1, max=65536)}
    path = Path(path)
    if fmt == "onnx":
        program = torch.onnx.export(
            model, example, dynamo=True, dynamic_shapes=(batch,), input_names=["pixel_values"], output_names=["logits"]
        )
        program.save(str(path))
    elif fmt == "torch-export":
        torch.export.save(torch.export.export(model, example, dynamic_shapes=(batch,)), str(path))
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    return path


def exported_logits(path: str | Path, fmt: str, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The logits the exported file computes for the images `x` (onnxruntime on the CPU for ONNX)."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        run = lambda xb: torch.from_numpy(session.run(None, {"pixel_values": xb.numpy()})[0])  # noqa: E731
    else:
        program = torch.export.load(str(path)).module()
        run = lambda xb: program(xb).detach()  # noqa: E731
    with torch.no_grad():
        return torch.cat([run(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def check_export(model: torch.nn.Module, path: str | Path, fmt: str, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The exported file against the model on the images `x` with labels `y`: the largest logit difference and both
    accuracies; `passed` when they agree (within TOLERANCE, and the same accuracy)."""
    with torch.no_grad():
        reference = torch.cat([model.eval()(x[i : i + 256]) for i in range(0, len(x), 256)])
    logits = exported_logits(path, fmt, x)
    result = {
        "images": len(x),
        "max_abs_logit_difference": (logits - reference).abs().max().item(),
        "model_accuracy": (reference.argmax(1) == y).float().mean().item(),
        "exported_accuracy": (logits.argmax(1) == y).float().mean().item(),
    }
    close = result["max_abs_logit_difference"] <= TOLERANCE
    result["passed"] = close and result["exported_accuracy"] == result["model_accuracy"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a zoo folder, a run folder, hf-hub:<id> or a tag with published weights")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default) or torch-export (.pt2)")
    parser.add_argument("--out", required=True, type=Path, help="the file to write")
    parser.add_argument("--data-dir", default="sample", help="images of the check (default: the shipped sample)")
    parser.add_argument("--n", type=int, default=512, help="how many test images the check uses (default 512)")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"--out {args.out} exists: give a new file name")
    if args.format == "onnx":
        try:
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as e:
            parser.error(f"ONNX export needs the export extra ({e.name} is missing): pip install 'fsr-models[export]'")
    try:
        model = load_any_model(args.model).eval()
        images, labels, _ = load_dataset("cifar10", "test", args.data_dir, args.n)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    if tuple(model.pretrained_cfg["input_size"][1:]) != tuple(images.shape[2:]):
        parser.error(f"{args.model} takes {model.pretrained_cfg['input_size']} images, the check's are CIFAR-10's")
    export(model, args.out, args.format)
    result = check_export(model, args.out, args.format, to_float(images), labels)
    print(
        f"wrote {args.out} ({args.format}); on {result['images']} test images its logits differ from PyTorch's by at "
        f"most {result['max_abs_logit_difference']:.2e} (limit {TOLERANCE:g}), accuracy "
        f"{100 * result['exported_accuracy']:.2f}% (PyTorch: {100 * result['model_accuracy']:.2f}%)"
    )
    if not result["passed"]:
        print(f"EXPORT CHECK FAILED: {args.out} does not compute the model's function; it is kept", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
