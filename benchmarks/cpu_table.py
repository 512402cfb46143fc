"""The CPU table of docs/benchmarks.md, written from the outputs of benchmarks/bench_models.py and
benchmarks/cpu_peak.py kept in docs/benchmarks/cpu/ (one file per option, as each run printed it).

    python benchmarks/cpu_table.py [FOLDER]          # the Markdown table (default docs/benchmarks/cpu)

Each AT step's GFLOP/s is given as a share of the peak from the design of the cores the run used (cpu_peak.py): fp32's
for fp32 runs, bf16's for bf16 runs, one core's for a run on one thread. `tests/test_docs_snippets.py` checks that
docs/benchmarks.md holds this table as it is.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "cpu"
# (file, the option in words); the WideResNet rows come from files of their own (a quarter of the batch)
OPTIONS = [
    (("fp32.txt", "wrn_fp32.txt"), "fp32"),
    (("bf16.txt",), "bf16 autocast"),
    (("bf16_channels_last.txt", "wrn_bf16_channels_last.txt"), "bf16 + channels_last"),
    (("bf16_channels_last_compiled.txt",), "bf16 + channels_last, torch.compile (inductor)"),
    (("bf16_channels_last_1_thread.txt",), "bf16 + channels_last, 1 thread (of 2 cores)"),
]
NAMES = {"resnet18": "ResNet-18", "vgg16": "VGG16", "wrn34_10": "WRN-34-10"}


def rows(path: Path) -> list[list[str]]:
    """The result rows of one bench_models.py output: network, batch, then (img/s, GFLOP/s[, ratio]) per step and
    the two epoch times."""
    out = []
    for line in path.read_text().splitlines():
        cells = line.split()
        if cells and re.fullmatch(r"(resnet18|vgg16|wrn34_10)_(fsr|plain)", cells[0]) and len(cells) >= 12:
            out.append(cells)
    return out


def peaks(folder: Path) -> dict[str, float]:
    text = (folder / "peak.txt").read_text()
    fp32, bf16 = re.search(r"fp32 (\d+) GFLOP/s, bf16 (\d+) GFLOP/s", text).groups()
    return {"fp32": float(fp32), "bf16": float(bf16)}


def table(folder: Path = FOLDER) -> str:
    peak = peaks(folder)
    lines = [
        "| option | network | batch | forward img/s | train img/s | N-FGSM AT img/s (GFLOP/s, % of peak) | "
        "PGD-10 AT img/s (GFLOP/s, % of peak) | N-FGSM epoch | PGD-10 epoch |",
        "| --- " * 9 + "|",
    ]
    for files, option in OPTIONS:
        # the peak of the cores the run used: one of two with one thread
        used = peak["bf16" if option.startswith("bf16") else "fp32"] / (2 if "1 thread" in option else 1)
        for name in files:
            for cells in rows(folder / name):
                network, batch, numbers = cells[0], cells[1], cells[2:]
                ratio = network.endswith("_fsr")  # FSR rows carry the FSR / plain ratio after each step
                step = 3 if ratio else 2
                forward, train, nfgsm, pgd10 = (numbers[i * step : i * step + 2] for i in range(4))
                epochs = numbers[4 * step :]
                backbone, kind = network.rsplit("_", 1)
                shown = f"{NAMES[backbone]}{' + FSR' if kind == 'fsr' else ''}"

                def at(img_s, gflops, used=used):
                    return f"{float(img_s):,.1f} ({float(gflops):.0f}, {100 * float(gflops) / used:.0f}%)"

                lines.append(
                    f"| {option} | {shown} | {batch} | {float(forward[0]):,.1f} | {float(train[0]):,.1f} | "
                    f"{at(*nfgsm)} | {at(*pgd10)} | {float(epochs[0]):.1f} min | {float(epochs[1]):.1f} min |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table(Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER), end="")
