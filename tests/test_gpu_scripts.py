"""The GPU machine's scripts, run on the CPU: training/gpu_run.sh (a fixed plan over calls, what comes back within
8 files of 16 MiB, one plan folder per config) and training/gpu_pair.sh (two configs at once, under CUDA MPS where
there is MPS)."""

import json
import os
import re
import subprocess
import sys
import tarfile

import pytest
import timm
import torch
from conftest import ROOT, TINY_ARGS, TRAIN_CONFIG, load_script

from fsr_models.folders import FSR_HEADS_NAME, WEIGHTS_NAME, load_model


def progress(out):
    return json.loads((out / "checkpoint" / "progress.json").read_text())


def gpu_script(tmp_path, out, *config_args, env_extra=()):
    """training/gpu_run.sh on the CPU: the tiny network on the sample, a plan of 2 epochs in calls of one epoch
    each, weights in shards of at most 1 MiB (the GPU calls use 16)."""
    env = {
        **os.environ,
        "OUT": str(tmp_path / out),
        "PYTHON": sys.executable,
        "AA_SECONDS": "600",
        "PLAN": "1",
        "RUN_DIR": str(tmp_path / "run"),
        "DATA_DIR": "sample",
        **dict(env_extra),
    }
    result = subprocess.run(
        [str(ROOT / "training" / "gpu_run.sh"), str(TRAIN_CONFIG), "0.0001", *config_args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    files = sorted((tmp_path / out).iterdir())
    assert len(files) <= 8 and all(f.stat().st_size <= 16 * 2**20 for f in files), files
    with tarfile.open(tmp_path / out / "run.tar") as tar:  # every file but the weight shards, in one
        tar.extractall(tmp_path / out)
    return tmp_path / out


@pytest.mark.slow  # two trainings and evaluations at once: CI runs it with the slow tests of this file
def test_gpu_pair_trains_two_configs_at_once_under_mps_where_there_is_mps(tmp_path):
    """training/gpu_pair.sh on the CPU with a stand-in for nvidia-cuda-mps-control on PATH (it records how it is
    called): MPS started with private folders and quit at the end, both twins trained and evaluated in their own
    folders, and what comes back within 8 files of 16 MiB."""
    bin_dir, record = tmp_path / "bin", tmp_path / "mps.txt"
    bin_dir.mkdir()
    stub = bin_dir / "nvidia-cuda-mps-control"
    stub.write_text(
        '#!/bin/sh\nif [ "$1" = -d ]; then what=start; else what=$(cat); fi\n'
        f'echo "$what $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY" >> {record}\n'
    )
    stub.chmod(0o755)
    configs = [ROOT / f"training/configs/resnet18_{kind}_at_cifar10_b128_30ep.yaml" for kind in ("fsr", "plain")]
    cpu = ["precision=fp32", "channels_last=false", "compile=none", "batch_size=50", "train_limit=150"]
    cpu += ["val_size=50", "test_size=20", "attack_steps=1", "val_attack_steps=1", TINY_ARGS]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path / "out")}
    env |= {"PYTHON": sys.executable, "DATA_DIR": "sample", "RUN_BASE": str(tmp_path), "AA_IMAGES": "4"}
    env |= {"EVAL_ATTACKS": "natural pgd20"}
    script = str(ROOT / "training" / "gpu_pair.sh")
    result = subprocess.run(
        [script, *map(str, configs), "0.0001", *cpu], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert record.read_text() == "start /tmp/fsr-mps/pipe /tmp/fsr-mps/log\nquit /tmp/fsr-mps/pipe /tmp/fsr-mps/log\n"
    files = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert len(files) <= 8 and all(f.stat().st_size <= 16 * 2**20 for f in files), files
    with tarfile.open(tmp_path / "out" / "run.tar") as tar:
        tar.extractall(tmp_path / "out")
    for config, kind in zip(configs, ("fsr", "plain")):
        folder = tmp_path / "out" / config.stem
        with tarfile.open(folder / "run.tar") as tar:
            tar.extractall(folder)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["epochs"] == 1 and "pgd20" in json.loads((folder / "robustness.json").read_text())["accuracy"]
        assert load_model(folder).pretrained_cfg["architecture"] == f"resnet18_{kind}"
        assert f"[{config.stem}] " in result.stdout  # each run's lines, named


def test_gpu_script_runs_a_fixed_plan_over_calls_and_leaves_at_most_8_files_of_16_mib(tmp_path):
    first = gpu_script(
        tmp_path,
        "call1",
        "precision=fp32",
        "channels_last=false",
        "compile=none",
        "batch_size=50",
        "train_limit=300",
        "val_size=50",
        "test_size=20",
        "epochs=2",
        "shard_mb=1",
        TINY_ARGS,
        "attack_steps=1",
        "val_attack_steps=1",
    )
    assert progress(tmp_path / "run")["epoch"] == 1  # this call is spent after epoch 1 of 2
    assert not (first / "metrics.json").exists() and load_model(first).num_classes == 10  # the best weights so far
    assert len(list(first.glob("model-*.safetensors"))) > 1  # sharded as model/ is, within the size limit
    # The same command resumes and finishes the plan, then evaluates the first 4 test images (AutoAttack is left out:
    # on images that a barely trained network gets right it runs minutes on a CPU; tests/test_evaluation.py has it)
    out = gpu_script(tmp_path, "call2", env_extra={"AA_IMAGES": "4", "EVAL_ATTACKS": "natural pgd20"})
    assert len(list(out.glob("model-*.safetensors"))) > 1 and (out / FSR_HEADS_NAME).is_file()
    test = json.loads((out / "metrics.json").read_text())
    assert test["epochs"] == 2 and test["test"]["images"] == 20
    assert (test["train_config"]["shard_mb"], test["train_config"]["stop_after_min"]) == (1, 0.0001)
    report = json.loads((out / "robustness.json").read_text())  # the attacks and the curve, first 4 test images
    accuracy = report["accuracy"]
    assert report["images"] == 4 and list(accuracy) == ["natural", "pgd20", "ensemble"]
    assert accuracy["pgd20"] <= accuracy["natural"] and len(report["curve"]["accuracy"]) == len(report["curve"]["eps"])
    assert (out / "robustness_curve.png").stat().st_size > 0
    log = (out / "train.log").read_text()
    assert re.search(r"^epoch 1 ", log, re.M) and re.search(r"^epoch 2 ", log, re.M)  # the log of both calls
    # The receiving side joins the shards into the one file that timm's local-dir: loader (and the Hub) reads
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = load_model(out).eval()(x)
        assert load_script("hub/merge_shards.py", "merge_shards").main([str(out)]) == 0
        assert not list(out.glob("model-*.safetensors")) and (out / WEIGHTS_NAME).is_file()
        assert torch.equal(timm.create_model(f"local-dir:{out}", pretrained=True).eval()(x), before)


def test_gpu_script_keeps_each_configs_plan_in_a_folder_of_its_own(tmp_path):
    # PYTHON=true turns every Python step into a no-op (the call then fails for want of weights): what is left is
    # where each plan lives, so that the plain twin's command never resumes the finished FSR run
    for name in ("resnet18_fsr_at_cifar10_b128_30ep", "resnet18_plain_at_cifar10_b128_30ep"):
        subprocess.run(
            ["bash", str(ROOT / "training" / "gpu_run.sh"), str(ROOT / f"training/configs/{name}.yaml"), "1"],
            cwd=tmp_path,
            env={**os.environ, "PLAN": "1", "PYTHON": "true", "OUT": str(tmp_path / "out")},
            capture_output=True,
        )
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "gpu-run-resnet18_fsr_at_cifar10_b128_30ep",
        "gpu-run-resnet18_plain_at_cifar10_b128_30ep",
    ]


@pytest.mark.slow
def test_the_gpu_measurement_prints_each_setting_and_the_pairs_time(tmp_path):
    """benchmarks/gpu_pair_check.sh dry-run on the CPU (eager, a narrow network, one second of steps each), with a
    stand-in for nvidia-cuda-mps-control: every figure the next GPU loan needs, MPS started and quit."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-cuda-mps-control").write_text(f'#!/bin/sh\ncat > /dev/null; echo "$@" >> {tmp_path}/mps\n')
    (bin_dir / "nvidia-cuda-mps-control").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": sys.executable}
    env["STEP_ARGS"] = "--compile none --widths 8 16 32 64 --batch 8"
    script = str(ROOT / "benchmarks" / "gpu_pair_check.sh")
    result = subprocess.run(
        [script, "1"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "GPU: none (CPU)"
    for label in ("(i)   one process", "(ii)  two processes at once", "(iii) two under CUDA MPS", "(iv)  attack"):
        assert any(line.startswith(label) and "images/s" in line for line in lines), (label, lines)
    assert re.match(r"a pair of 30-epoch runs .* at \d+ images/s: [\d.]+ min of training", lines[-1])
    assert (tmp_path / "mps").read_text() == "-d\n\n"  # started as a daemon, then quit (on its standard input)
