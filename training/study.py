"""Run a list of short training settings on the same data and budget, and draw their curves side by side.

    python training/study.py training/studies/cpu_recipe.yaml --runs runs/study-cpu --report docs/convergence/cpu
    python training/study.py STUDY.yaml --runs DIR --report DIR --jobs 2 --set data_dir=/data/cifar10
    python training/study.py STUDY.yaml --runs DIR --report DIR --plot-only      # redraw from the report's copies
    python training/study.py STUDY.yaml --runs DIR --report DIR --minutes 8      # stop within 8 minutes, go on later

A study file (YAML) holds `base` (`fsr_models.training.TrainConfig` settings every run shares), `models` (each
setting runs once per model, unless it names its own `model`) and `settings` (name -> the settings that differ).
Every run is `training/train.py` itself, in a process of its own, in `<runs>/<setting>.<model>/`: a finished run is
kept, an interrupted one resumed, so the command can simply be run again. The report folder gets each run's
per-epoch curves (`<run>.jsonl`, the trainer's metrics.jsonl) and final test results (`<run>.json`),
`curves_epoch.png` and `curves_step.png` (validation PGD and clean accuracy, adversarial training accuracy and the
FSR health figures against epoch and against SGD step, one line per run) and `table.md`. With `--minutes M` the
command stops within M minutes: each run it starts may use what is left (the trainer's `stop_after_min`,
checkpointed, never starting an epoch that the minutes left cannot hold), no run starts once too little is left for
the study's fastest epoch so far, and the same command later goes on where it stopped."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib
import yaml

from fsr_models.evaluation.report import interval_95
from fsr_models.training import ConfigError, TrainConfig, config_values, load_config
from fsr_models.training.config import RESUME_MAY_CHANGE, scaled_lr
from fsr_models.training.record import logged_epoch_seconds

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

TRAIN = Path(__file__).resolve().with_name("train.py")

# (metrics.jsonl key, panel title); FSR keys are per module ("fsr4/r_contribution"), the first module is drawn.
PANELS = [
    ("val_pgd_acc", "validation PGD accuracy"),
    ("val_clean_acc", "validation clean accuracy"),
    ("train_adv_acc", "adversarial training accuracy"),
    ("r_contribution", "R's contribution |(1-m)R(f-)| / |f-|"),
    ("r_live_2", "live units after R's 2nd ReLU"),
    ("s_live_2", "live units after S's 2nd ReLU"),
    ("mask_mean", "mask mean"),
    ("mask_saturated", "mask share > 0.99 or < 0.01"),
]


def load_study(path: Path, overrides: list[str]) -> dict[str, dict]:
    """Run name -> its full settings; each one is checked as train.py checks a config before anything runs."""
    study = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(study) - {"base", "models", "settings"})
    if unknown or not study.get("settings"):
        raise ConfigError(f"{path}: a study holds base, models and settings (name -> settings), got {sorted(study)}")
    base = {**(study.get("base") or {}), **config_values(None, overrides)}
    runs = {}
    for name, setting in study["settings"].items():
        setting = setting or {}
        for model in (
            [setting["model"]] if "model" in setting else study.get("models") or [None]
        ):  # a setting may name its own
            values = {**base, **setting, **({"model": model} if model else {})}
            run_config(values)  # fails early, naming the key
            runs[f"{name}.{model}" if model else name] = values
    return runs


def train_run(name: str, values: dict, runs_dir: Path, threads: int | None, deadline: float | None) -> tuple[str, int]:
    """One run through train.py: started, resumed or left alone when it has finished; within `deadline` (a
    time.monotonic() value) when given. Returns (name, exit code), exit code None when it was not started."""
    out = runs_dir / name
    if (out / "model" / "metrics.json").is_file():
        return name, 0
    limit = {}
    resuming = (out / "checkpoint").is_dir() or (out / "checkpoint.old").is_dir()
    if deadline is not None:
        minutes = (deadline - time.monotonic()) / 60
        # a resumed run stops by itself before an epoch its minutes cannot hold; a new one has no epoch time of its
        # own yet, so it waits for a call with time for the study's fastest epoch
        if minutes <= 0 or (not resuming and minutes * 60 < fastest_epoch_seconds(runs_dir)):
            return name, None
        limit = {"stop_after_min": round(minutes, 3)}
    if resuming:
        args = ["--resume", str(out), *(["--set", *(f"{k}={v}" for k, v in limit.items())] if limit else [])]
    else:
        shutil.rmtree(out, ignore_errors=True)  # a run that stopped before its first checkpoint starts again
        settings = {**values, **limit, "output_dir": str(out)}
        args = ["--set", *(f"{k}={json.dumps(v)}" for k, v in settings.items())]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / f"{name}.log", "a") as log:
        code = subprocess.run(
            [sys.executable, str(TRAIN), *args], stdout=log, stderr=subprocess.STDOUT, env=env
        ).returncode
    return name, code


def fastest_epoch_seconds(runs_dir: Path) -> float:
    """The shortest epoch any run of the study has logged (0 before the first)."""
    return min((s for run in runs_dir.glob("*/") for s in logged_epoch_seconds(run)), default=0.0)


def first_module_value(row: dict, key: str):
    """A health figure of the first FSR module of a metrics line (None for a network without FSR)."""
    if key == "mask_saturated":
        above, below = first_module_value(row, "mask_above_0.99"), first_module_value(row, "mask_below_0.01")
        return None if above is None else above + below
    return next((v for k, v in row.items() if k.endswith(f"/{key}")), None)


def plot(curves: dict[str, list[dict]], x_key: str, path: Path, title: str) -> None:
    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5))
    # one colour per setting (an FSR run and its plain twin share it, the twin dashed); per model in a study of one
    # setting and several models
    one_setting = len({name.split(".")[0] for name in curves}) == 1
    group = lambda name: name.split(".", 1)[-1] if one_setting else name.split(".")[0]  # noqa: E731
    colors = {g: plt.cm.tab10(i % 10) for i, g in enumerate(sorted({group(name) for name in curves}))}
    for ax, (key, panel) in zip(axes.flat, PANELS):
        for name, rows in curves.items():
            points = [(r[x_key], r.get(key, first_module_value(r, key))) for r in rows if x_key in r]
            points = [(x, y) for x, y in points if y is not None]
            if points:
                plain = name.endswith("_plain")
                ax.plot(
                    *zip(*points),
                    color=colors[group(name)],
                    linestyle="--" if plain else "-",
                    marker="o",
                    markersize=3,
                    label=name,
                )
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("epoch" if x_key == "epoch" else "SGD steps")
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=9)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08 + 0.025 * (len(labels) // 4), 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def attack_name(cfg) -> str:
    """The training attack as a reader names it: N-FGSM, PGD-10, TRADES' PGD-10, none."""
    if cfg.method == "natural":
        return "none"
    name = "N-FGSM" if cfg.attack == "nfgsm" else f"PGD-{cfg.attack_steps}"
    return name if cfg.method == "at" else f"{cfg.method.upper()}'s {name}"


def test_figure(accuracy: float | None, images: int) -> str:
    """A final test accuracy in % with the half-width of its 95% interval over the test images: '47.3 ± 3.1'."""
    return "-" if accuracy is None else f"{100 * accuracy:.1f} ± {100 * interval_95(accuracy, images):.1f}"


def table(runs: dict[str, dict], curves: dict[str, list[dict]], results: dict[str, dict]) -> str:
    rows = [
        "| run | attack | batch | lr (absolute) | warm-up epochs | precision | init | epochs | SGD steps | "
        "best epoch | best val PGD | test natural (95%) | test PGD-20 (95%) | R contribution | R live (2nd ReLU) | "
        "S live (2nd ReLU) | mask mean | train min |",
        "| --- " * 18 + "|",
    ]
    for name, values in runs.items():
        cfg, last, res = (
            run_config(values),
            curves[name][-1],
            results[name],
        )
        health = next(iter(res.get("fsr_health", {}).values()), {})
        fig = lambda v, f="{:.3f}": "-" if v is None else f.format(v)  # noqa: E731
        test, images = res["test"]["accuracy"], res["test"]["images"]
        pgd = next((v for k, v in test.items() if k.startswith("pgd")), None)
        # the minutes of the epochs, summed (an epoch that a resume repeated counts once, its last try)
        epoch_seconds = {m["epoch"]: m["seconds"] for m in curves[name] if "seconds" in m}
        rows.append(
            f"| {name} | {attack_name(cfg)} | {cfg.batch_size} | {scaled_lr(cfg.lr_per_128, cfg.batch_size):g}"
            f"{' cyclic' if cfg.lr_schedule == 'cyclic' else ''} | {cfg.warmup_epochs:g} | "
            f"{cfg.precision} | {cfg.weight_init} | {res['epochs']} | {last.get('step', '-')} | "
            f"{res['best_epoch']} | "
            f"{fig(100 * res['best_val_pgd_acc'], '{:.1f}')} | {test_figure(test['natural'], images)} | "
            f"{test_figure(pgd, images)} | {fig(health.get('r_contribution'))} | "
            f"{fig(health.get('r_live_2'), '{:.0%}')} | {fig(health.get('s_live_2'), '{:.0%}')} | "
            f"{fig(health.get('mask_mean'))} | {sum(epoch_seconds.values()) / 60:.1f} |"
        )
    return "\n".join(rows) + "\n"


def run_config(values: dict) -> TrainConfig:
    """A run's settings as the trainer reads them (the data set's recipe under them)."""
    return load_config(None, [f"{k}={json.dumps(v)}" for k, v in values.items()])


def copy_differs(copy: Path, values: dict) -> list[str]:
    """The settings in which a report's copy of a finished run (its train_config) differs from what the study now
    gives that run; those a resumed run may change do not count."""
    saved = json.loads(copy.read_text()).get("train_config", {})
    now = dataclasses.asdict(run_config(values))
    return [k for k, v in now.items() if k in saved and k not in RESUME_MAY_CHANGE and saved[k] != v]


def report(runs: dict[str, dict], runs_dir: Path, report_dir: Path, title: str) -> None:
    """Copy each finished run's curves and results into `report_dir`; draw the figures and the table there from
    those copies (so a report redraws after its runs' folders are gone)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    curves, results = {}, {}
    for name in runs:
        out = runs_dir / name
        if (out / "model" / "metrics.json").is_file():
            shutil.copyfile(out / "metrics.jsonl", report_dir / f"{name}.jsonl")
            metrics = json.loads((out / "model" / "metrics.json").read_text())
            (report_dir / f"{name}.json").write_text(json.dumps(metrics, indent=2))
        elif out.exists() or not (report_dir / f"{name}.json").is_file():
            continue  # not finished (a copy from before is not this run's), or never run
        elif differs := copy_differs(report_dir / f"{name}.json", runs[name]):
            print(f"report: the copy of {name} was trained with other settings ({', '.join(differs)}): left out")
            continue
        results[name] = json.loads((report_dir / f"{name}.json").read_text())
        curves[name] = [json.loads(line) for line in (report_dir / f"{name}.jsonl").read_text().splitlines()]
    finished = {name: runs[name] for name in curves}
    if not finished:
        print(f"report: no finished run of the {len(runs)} to draw; {report_dir} is left as it was")
        return
    plot(curves, "epoch", report_dir / "curves_epoch.png", f"{title}: against epoch")
    plot(curves, "step", report_dir / "curves_step.png", f"{title}: against SGD step")
    (report_dir / "table.md").write_text(table(finished, curves, results))
    missing = [name for name in runs if name not in curves]
    print(f"report: {report_dir} ({len(curves)} of {len(runs)} runs{f'; not finished: {missing}' if missing else ''})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="the study's YAML file (training/studies/)")
    parser.add_argument("--runs", type=Path, required=True, help="folder of the training runs (large: checkpoints)")
    parser.add_argument("--report", type=Path, required=True, help="folder of the curves, figures and table (small)")
    parser.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="settings for every run (e.g. data_dir=...), over the study's base",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (CPU: each gets cores / jobs threads)")
    parser.add_argument("--only", nargs="+", metavar="RUN", help="run only these (setting or setting.model names)")
    parser.add_argument(
        "--plot-only",
        action="store_true",
        help="draw the report from the runs as they are, and the copies the report holds",
    )
    parser.add_argument("--minutes", type=float, help="stop within this many minutes (the same command goes on later)")
    args = parser.parse_args(argv)
    try:
        if args.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
        runs = load_study(args.study, args.set)
        chosen = {n: v for n, v in runs.items() if not args.only or n in args.only or n.split(".")[0] in args.only}
        if args.only and not chosen:
            raise ConfigError(f"--only {args.only} matches none of the study's runs {list(runs)}")
    except (ConfigError, OSError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = []
    if not args.plot_only:
        threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
        deadline = time.monotonic() + 60 * args.minutes if args.minutes is not None else None
        with ThreadPoolExecutor(args.jobs) as pool:
            for name, code in pool.map(lambda item: train_run(*item, args.runs, threads, deadline), chosen.items()):
                finished = (args.runs / name / "model" / "metrics.json").is_file()
                state = (
                    "not started: too little time left for an epoch"
                    if code is None
                    else "done"
                    if finished
                    else "stopped for time: run the command again"
                    if code == 0
                    else f"exit {code}"
                )
                print(f"{name}: {state} (log: {args.runs / name}.log)", flush=True)
                failed += [name] if code else []
    report(runs, args.runs, args.report, args.study.stem)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
