"""Draw a training run's per-epoch curves from its log, as training/study.py draws a study's runs.

    python training/plot_log.py hub/weights/resnet18_fsr.at_cifar10/train.log \
        --name gpu_b128_30ep.resnet18_fsr --report docs/convergence/gpu_b128_30ep \
        --compare docs/convergence/cpu/a_paper_b128.resnet18_fsr.jsonl \
        docs/convergence/cpu/f_b128_bf16.resnet18_fsr.jsonl

The log is what training/train.py prints (`train.log` beside the weights of a GPU run, where the run's
metrics.jsonl did not come back): per epoch an `epoch N step S key value ...` line, after the FSR health line of
each FSR module (`fsr4: R 0.299 live S 100%/100% R 98%/23% mask 0.72 (>0.99 44%, <0.01 17%)`). The report folder
gets `<name>.jsonl` (those figures in metrics.jsonl's keys; the log's percentages are whole numbers) and
`curves_epoch.png` / `curves_step.png`, with the runs of `--compare` (metrics.jsonl files, named by their file name)
beside it. An epoch logged twice (a resumed run) counts once, its last line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from study import plot

HEALTH = re.compile(
    r"^(?P<module>\w+): R (?P<r_contribution>\S+) live S (?P<s_live_1>\d+)%/(?P<s_live_2>\d+)% "
    r"R (?P<r_live_1>\d+)%/(?P<r_live_2>\d+)% mask (?P<mask_mean>\S+) "
    r"\(>0\.99 (?P<above>\d+)%, <0\.01 (?P<below>\d+)%\)"
)
EPOCH = re.compile(r"^epoch (\d+) step (\d+)((?: \w+ \S+)*)$")


def curve_from_log(text: str) -> list[dict]:
    """The epochs' figures of a trainer log, one dict per epoch in metrics.jsonl's keys."""
    rows, health = {}, {}
    for line in text.splitlines():
        if match := HEALTH.match(line):
            h, module = match.groupdict(), match["module"]
            health[f"{module}/r_contribution"] = float(h["r_contribution"])
            health[f"{module}/mask_mean"] = float(h["mask_mean"])
            health[f"{module}/mask_above_0.99"] = int(h["above"]) / 100
            health[f"{module}/mask_below_0.01"] = int(h["below"]) / 100
            for key in ("s_live_1", "s_live_2", "r_live_1", "r_live_2"):
                health[f"{module}/{key}"] = int(h[key]) / 100
        elif match := EPOCH.match(line):
            pairs = match[3].split()
            figures = {key: float(value) for key, value in zip(pairs[::2], pairs[1::2])}
            rows[int(match[1])] = {"epoch": int(match[1]), "step": int(match[2]), **figures, **health}
            health = {}
    return [rows[epoch] for epoch in sorted(rows)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path, help="the trainer's log (train.log)")
    parser.add_argument("--name", required=True, help="the run's name in the figures, <setting>.<model>")
    parser.add_argument("--report", type=Path, required=True, help="folder for <name>.jsonl and the figures")
    parser.add_argument("--compare", type=Path, nargs="+", default=[], help="metrics.jsonl files drawn beside it")
    args = parser.parse_args(argv)
    rows = curve_from_log(args.log.read_text())
    if not rows:
        print(f"error: {args.log} holds no 'epoch N step S ...' line of training/train.py", file=sys.stderr)
        return 2
    args.report.mkdir(parents=True, exist_ok=True)
    (args.report / f"{args.name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    curves = {args.name: rows}
    for path in args.compare:
        curves[path.name.removesuffix(".jsonl")] = [json.loads(line) for line in path.read_text().splitlines()]
    title = ", ".join(curves)
    plot(curves, "epoch", args.report / "curves_epoch.png", f"{title}: against epoch")
    plot(curves, "step", args.report / "curves_step.png", f"{title}: against SGD step")
    print(f"{len(rows)} epochs of {args.log} drawn in {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
