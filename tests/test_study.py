"""training/study.py: settings run through the trainer, resumed or skipped on a second call, drawn side by side."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"
sys.path.insert(0, str(ROOT / "training"))
import study  # noqa: E402

STUDY = """
base:
  model_args: {widths: [8, 16, 32, 64]}
  train_limit: 300
  val_size: 100
  test_size: 20
  epochs: 1
  batch_size: 50
  attack_steps: 1
  val_attack_steps: 1
  eval_attack_steps: 2
models: [resnet18_fsr, resnet18_plain]
settings:
  small_lr:
    lr: 0.05
  warm:
    model: resnet18_fsr
    warmup_epochs: 1
"""


@pytest.mark.skipif(not SHARED_CIFAR10.is_dir(), reason="needs the CIFAR-10 arrays in ../shared")
def test_study_runs_each_setting_once_and_draws_them(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 300), ("test", 20)):
        with np.load(SHARED_CIFAR10 / f"{split}.npz") as arrays:
            np.savez(data / f"{split}.npz", x=arrays["x"][:n], y=arrays["y"][:n])
    (tmp_path / "study.yaml").write_text(STUDY)
    args = [str(tmp_path / "study.yaml"), "--runs", str(tmp_path / "runs"), "--report", str(tmp_path / "report"),
            "--set", f"data_dir={data}"]  # fmt: skip
    assert study.main(args + ["--only", "warm"]) == 0
    assert "warm.resnet18_fsr: done" in capsys.readouterr().out
    assert study.main(args + ["--minutes", "0"]) == 0  # no time left: nothing new starts
    assert "small_lr.resnet18_fsr: not started: no time left" in capsys.readouterr().out
    assert study.main(args) == 0
    report = tmp_path / "report"
    names = ["small_lr.resnet18_fsr", "small_lr.resnet18_plain", "warm.resnet18_fsr"]
    for name in names:
        curve = [json.loads(line) for line in (report / f"{name}.jsonl").read_text().splitlines()]
        assert [m["epoch"] for m in curve] == [0, 1] and curve[1]["step"] == 4  # the trainer's own metrics
        assert json.loads((report / f"{name}.json").read_text())["sgd_steps"] == 4
    assert "fsr4/r_contribution" in curve[1]  # the last one, warm.resnet18_fsr: an FSR network
    assert "warmup_epochs: 1.0" in (tmp_path / "runs" / names[2] / "config.yaml").read_text()
    table = (report / "table.md").read_text().splitlines()
    assert [row.split(" | ")[0].strip("| ") for row in table[2:]] == names
    for figure in ("curves_epoch.png", "curves_step.png"):
        assert Image.open(report / figure).size[0] > 1000
    capsys.readouterr()
    finished = tmp_path / "runs" / names[0] / "model" / "metrics.json"
    mtime = finished.stat().st_mtime
    assert study.main(args) == 0  # finished runs are kept, not run again
    assert "small_lr.resnet18_fsr: done" in capsys.readouterr().out and finished.stat().st_mtime == mtime


def test_bad_study_files_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("base: {epochs: 1}\nsettings: {x: {lrr: 0.1}}\n")
    assert study.main([str(tmp_path / "bad.yaml"), "--runs", str(tmp_path), "--report", str(tmp_path)]) == 2
    assert "unknown config key 'lrr'" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("settings: {x: {lr: 0.1}}\nmodel: resnet18_fsr\n")
    assert study.main([str(tmp_path / "bad.yaml"), "--runs", str(tmp_path), "--report", str(tmp_path)]) == 2
    assert "a study holds base, models and settings" in capsys.readouterr().err


def test_an_interrupted_run_is_resumed_from_its_folder_alone(tmp_path, monkeypatch):
    (tmp_path / "s.resnet18_fsr" / "checkpoint").mkdir(parents=True)
    calls = []
    monkeypatch.setattr(study.subprocess, "run", lambda args, **kw: calls.append(args[2:]) or type("R", (), {"returncode": 0}))
    assert study.train_run("s.resnet18_fsr", {"lr": 0.1}, tmp_path, None, None) == ("s.resnet18_fsr", 0)
    assert calls[-1] == ["--resume", str(tmp_path / "s.resnet18_fsr")]  # the saved settings, nothing else
    study.train_run("s.resnet18_fsr", {"lr": 0.1}, tmp_path, None, study.time.monotonic() + 60)
    assert calls[-1][:3] == ["--resume", str(tmp_path / "s.resnet18_fsr"), "--set"]
    key, minutes = calls[-1][3].split("=")
    assert key == "stop_after_min" and 0.9 < float(minutes) <= 1.0
