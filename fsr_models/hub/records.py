"""A trained model's records, as the cards read them.

A zoo folder's records: `metrics.json` (the training script's: its final test as `test`, the run's size, FSR health,
the full config as `train_config`, and a later evaluation's report as `evaluation` where one was added),
`robustness.json` and `robustness_adaptive.json` (reports of `python -m fsr_models.evaluate`; the accuracy-against-eps
curve of one of them is plotted in `robustness_curve.png`), `figure1.png` (`python -m fsr_models.visualize`) and,
in an exported repository, `comparison.json` (the records of the zoo's twin). `read_record` reads them into a
`Record`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fsr_models.data import SAMPLE_SIZES
from fsr_models.evaluation.report import eval_results
from fsr_models.facts.datasets import DATASETS
from fsr_models.hub.weight_files import CONFIG_NAME, FSR_HEADS_NAME

METRICS_NAME, ROBUSTNESS_NAME, CURVE_NAME = "metrics.json", "robustness.json", "robustness_curve.png"
ADAPTIVE_NAME, FIGURE_NAME, COMPARISON_NAME = "robustness_adaptive.json", "figure1.png", "comparison.json"
RUN_KEYS = ("train_images", "val_images", "epochs")  # what a trained model's metrics.json records of its run


@dataclass
class Record:
    """A trained model's records (see the module's docstring), as the cards read them."""

    config: dict
    metrics: dict
    robustness: dict | None = None
    adaptive: dict | None = None
    curve_png: bool = False
    comparison: dict | None = None  # {"model": "<arch>.<tag>", "metrics": ..., "robustness": ..., "adaptive": ...}
    fsr_heads: bool = False
    figure_png: bool = False
    folder: Path | None = None  # where the records were read, for messages

    @property
    def name(self) -> str:
        return f"{self.config['architecture']}.{self.config['pretrained_cfg'].get('tag', '')}"

    @property
    def train(self) -> dict:
        """The recorded training config (empty for weights saved without one)."""
        return self.metrics.get("train_config") or {}

    @property
    def reports(self) -> list[tuple[str, dict]]:
        """(title, report) of every measured report: the run's final test first, then the later evaluations."""
        self.check_metrics()
        reports = [("the training run's final test", self.metrics["test"])]
        if "evaluation" in self.metrics:
            reports.append(("a later evaluation (metrics.json, evaluation)", self.metrics["evaluation"]))
        if self.robustness:
            reports.append((f"the robustness evaluation ({ROBUSTNESS_NAME})", self.robustness))
        if self.adaptive:
            reports.append((f"the adaptive evaluation ({ADAPTIVE_NAME})", self.adaptive))
        return reports

    def check_metrics(self) -> None:
        """A ValueError naming the file unless metrics.json holds the final test and, for a trained model, its run."""
        where = f"{self.folder or '.'}/{METRICS_NAME}"
        if "test" not in self.metrics:
            raise ValueError(
                f"{where} has no measured robustness (no 'test' report): a card needs the final test that "
                "training/train.py writes"
            )
        if self.train and (missing := [k for k in RUN_KEYS if self.metrics.get(k) is None]):
            raise ValueError(f"{where} lacks {missing}: it is not one that training/train.py wrote")

    @property
    def eval_results(self) -> list:
        """Every report as the card's metadata (the Hub's eval results)."""
        return [result for _, report in self.reports for result in eval_results(report)]

    def largest_with(self, attack: str) -> dict | None:
        """The report with `attack` (e.g. "autoattack") on the most images; None if none has it."""
        having = [r for _, r in self.reports if attack in r["accuracy"]]
        return max(having, key=lambda r: r["images"], default=None)

    @property
    def curve_report(self) -> dict | None:
        """The report holding the robustness curve: robustness.json's, else the adaptive one's (`--sanity`)."""
        return next((r for r in (self.robustness, self.adaptive) if r and "curve" in r), None)

    @property
    def run(self) -> dict:
        """The run's size and data: images, epochs, steps, and whether only part of the training images served."""
        self.check_metrics()
        m, train = self.metrics, self.train
        dataset = train.get("dataset") or self.metrics.get("test", {}).get("dataset", "cifar10")
        full = DATASETS[dataset].train_images
        used = m.get("train_images", 0) + m.get("val_images", 0)
        return {
            "dataset": dataset,
            "available": SAMPLE_SIZES["train"] if str(train.get("data_dir")) == "sample" else full,
            "subset": bool(used) and used < full,
            **{k: m.get(k) for k in ("train_images", "val_images", "epochs", "sgd_steps")},
            "batch_size": train.get("batch_size"),
        }


def read_record(folder: str | Path) -> Record:
    folder = Path(folder)
    read = lambda name: json.loads((folder / name).read_text()) if (folder / name).is_file() else None  # noqa: E731
    have = lambda name: (folder / name).is_file()  # noqa: E731
    return Record(
        read(CONFIG_NAME),
        read(METRICS_NAME),
        read(ROBUSTNESS_NAME),
        read(ADAPTIVE_NAME),
        have(CURVE_NAME),
        read(COMPARISON_NAME),
        have(FSR_HEADS_NAME),
        have(FIGURE_NAME),
        folder,
    )
