"""training/study.py: settings run through the trainer, resumed or skipped on a second call, drawn side by side."""

import json
import shutil

import pytest
import yaml
from conftest import load_script, tiny_run_args
from PIL import Image

study = load_script("training/study.py", "study")
plot_log = load_script("training/plot_log.py", "plot_log")


def test_study_runs_each_setting_once_and_draws_them(reference_run, tmp_path):
    # The study's base is the reference run's settings: that run, copied in as the setting "reference", is kept as
    # finished; the setting "plain" trains the plain twin (a process of its own) for one epoch.
    base = yaml.safe_load((reference_run / "config.yaml").read_text())
    base = {
        k: base[k]
        for k in (
            "model_args",
            "data_dir",
            "method",
            "train_limit",
            "val_size",
            "test_size",
            "epochs",
            "batch_size",
            "warmup_epochs",
            "lr_milestones",
            "attack_steps",
            "val_attack_steps",
        )
    }
    (tmp_path / "study.yaml").write_text(
        yaml.safe_dump(
            {
                "base": base,
                "models": ["resnet18_fsr"],
                "settings": {"reference": {}, "plain": {"model": "resnet18_plain", "epochs": 1, "warmup_epochs": 0}},
            },
            sort_keys=False,
        )
    )
    runs, report = tmp_path / "runs", tmp_path / "report"
    shutil.copytree(reference_run, runs / "reference.resnet18_fsr")
    args = [str(tmp_path / "study.yaml"), "--runs", str(runs), "--report", str(report)]
    assert study.main(args + ["--only", "plain", "--minutes", "0"]) == 0  # no time left: nothing new starts
    assert not (runs / "plain.resnet18_plain").exists()
    finished = runs / "reference.resnet18_fsr" / "model" / "metrics.json"
    mtime = finished.stat().st_mtime_ns
    assert study.main(args) == 0
    assert finished.stat().st_mtime_ns == mtime  # finished runs are kept, not run again
    names = ["reference.resnet18_fsr", "plain.resnet18_plain"]
    for name, epochs, steps in zip(names, (2, 1), (10, 5)):
        curve = [json.loads(line) for line in (report / f"{name}.jsonl").read_text().splitlines()]
        assert [m["epoch"] for m in curve] == list(range(epochs + 1)) and curve[-1]["step"] == steps  # the trainer's
        assert json.loads((report / f"{name}.json").read_text())["sgd_steps"] == steps
        assert ("fsr4/r_contribution" in curve[-1]) == name.endswith("_fsr")
    saved = yaml.safe_load((runs / names[1] / "config.yaml").read_text())
    assert (saved["model"], saved["epochs"], saved["warmup_epochs"]) == ("resnet18_plain", 1, 0.0)
    table = (report / "table.md").read_text().splitlines()
    assert [row.split(" | ")[0].strip("| ") for row in table[2:]] == names
    for figure in ("curves_epoch.png", "curves_step.png"):
        assert Image.open(report / figure).size[0] > 1000
    test = json.loads((report / f"{names[0]}.json").read_text())["test"]
    p, n = test["accuracy"]["natural"], test["images"]
    natural_cell = table[2].split(" | ")[11]
    assert natural_cell == f"{100 * p:.1f} ± {196 * (p * (1 - p) / n) ** 0.5:.1f}"  # with its 95% interval
    shutil.rmtree(runs)  # the report redraws from its own copies of the finished runs
    assert study.main(args + ["--plot-only"]) == 0
    assert (report / "table.md").read_text().splitlines() == table
    # but not from a copy of a run the study now sets otherwise, nor from one whose new run has not finished
    settings = (tmp_path / "study.yaml").read_text()
    changed = yaml.safe_load(settings)
    changed["settings"]["plain"]["epochs"] = 3
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(changed))
    assert study.main(args + ["--plot-only"]) == 0
    assert (report / "table.md").read_text().splitlines() == table[:3]  # the plain run left out
    (tmp_path / "study.yaml").write_text(settings)
    (runs / names[0]).mkdir(parents=True)  # the reference run started again
    assert study.main(args + ["--plot-only"]) == 0
    assert (report / "table.md").read_text().splitlines() == table[:2] + table[3:]


def test_the_figures_tell_the_runs_apart_by_setting_or_by_model(tmp_path, monkeypatch):
    """Several settings: one colour each (an FSR run and its plain twin share it, the twin dashed); one setting of
    several models: one colour per model."""
    drawn = []
    monkeypatch.setattr(study.plt, "close", drawn.append)
    curve = [{"epoch": 0, "step": 0, "val_pgd_acc": 0.1}, {"epoch": 1, "step": 9, "val_pgd_acc": 0.2}]

    def colours(names):
        study.plot(dict.fromkeys(names, curve), "epoch", tmp_path / "c.png", "t")
        return {line.get_label(): line.get_color() for line in drawn.pop().axes[0].get_lines()}

    pair = colours(["a.resnet18_fsr", "a.resnet18_plain", "b.resnet18_fsr", "b.resnet18_plain"])
    assert pair["a.resnet18_fsr"] == pair["a.resnet18_plain"] != pair["b.resnet18_fsr"] == pair["b.resnet18_plain"]
    five = colours([f"s.resnet18_{m}" for m in ("plain", "fd", "cas", "cifs", "fsr")])
    assert len({tuple(c) for c in five.values()}) == 5


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
    monkeypatch.setattr(
        study.subprocess, "run", lambda args, **kw: calls.append(args[2:]) or type("R", (), {"returncode": 0})
    )
    assert study.train_run("s.resnet18_fsr", {"lr": 0.1}, tmp_path, None, None) == ("s.resnet18_fsr", 0)
    assert calls[-1] == ["--resume", str(tmp_path / "s.resnet18_fsr")]  # the saved settings, nothing else
    study.train_run("s.resnet18_fsr", {"lr": 0.1}, tmp_path, None, study.time.monotonic() + 60)
    assert calls[-1][:3] == ["--resume", str(tmp_path / "s.resnet18_fsr"), "--set"]
    key, minutes = calls[-1][3].split("=")
    assert key == "stop_after_min" and 0.9 < float(minutes) <= 1.0


def test_a_new_run_starts_only_with_time_for_the_studys_fastest_epoch(tmp_path, monkeypatch):
    (tmp_path / "s.resnet18_plain").mkdir()
    epochs = [{"epoch": 0}, {"epoch": 1, "seconds": 300.0}, {"epoch": 2, "seconds": 240.0}]
    (tmp_path / "s.resnet18_plain" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in epochs))
    calls = []
    monkeypatch.setattr(
        study.subprocess, "run", lambda args, **kw: calls.append(args[2:]) or type("R", (), {"returncode": 0})
    )
    three_minutes = study.time.monotonic() + 180
    assert study.train_run("s.resnet18_fsr", {"lr": 0.1}, tmp_path, None, three_minutes) == ("s.resnet18_fsr", None)
    assert calls == [] and study.fastest_epoch_seconds(tmp_path) == 240.0
    five_minutes = study.time.monotonic() + 300
    assert study.train_run("s.resnet18_fsr", {"lr": 0.1}, tmp_path, None, five_minutes) == ("s.resnet18_fsr", 0)
    assert any(a.startswith("stop_after_min=") for a in calls[-1])
    (tmp_path / "s.resnet18_plain" / "checkpoint").mkdir()  # a resumed run decides for itself, from its own epochs
    assert study.train_run("s.resnet18_plain", {"lr": 0.1}, tmp_path, None, three_minutes) == ("s.resnet18_plain", 0)
    assert calls[-1][:2] == ["--resume", str(tmp_path / "s.resnet18_plain")]


def test_a_training_log_gives_the_curves_its_metrics_jsonl_holds(train_script, tmp_path, capsys):
    """training/plot_log.py reads what the trainer prints (a GPU run's train.log) back into metrics.jsonl's figures,
    to the precision the log prints them with."""
    out = tmp_path / "run"
    assert train_script.main(tiny_run_args(out, "epochs=1")) == 0
    printed = capsys.readouterr().out
    rows = plot_log.curve_from_log(printed)
    assert plot_log.curve_from_log(printed + printed) == rows  # a resumed run's log repeats epochs: the last counts
    saved = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [line["epoch"] for line in saved] == [0, 1]
    for row, line in zip(rows, saved):
        assert row.keys() == line.keys()
        assert row == {key: pytest.approx(value, rel=1e-3, abs=0.006) for key, value in line.items()}
    (tmp_path / "empty.log").write_text("no epoch lines\n")
    assert plot_log.main([str(tmp_path / "empty.log"), "--name", "x", "--report", str(tmp_path)]) == 2
