"""The GPU machine's scripts, run on the CPU: training/gpu_run.sh (a fixed plan over calls, what comes back within
8 files of 16 MiB, one plan folder per config) and training/gpu_pair.sh (two configs at once, under CUDA MPS where
there is MPS)."""

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import timm
import torch
from conftest import ROOT, TINY_ARGS, TRAIN_CONFIG, load_script

from fsr_models.hub.folders import FSR_HEADS_NAME, WEIGHTS_NAME, load_model


def progress(out):
    return json.loads((out / "checkpoint" / "progress.json").read_text())


def gpu_script(tmp_path, out, *config_args, env_extra=(), minutes="0.0001"):
    """training/gpu_run.sh on the CPU: the tiny network on the sample, a plan of 2 epochs in calls of `minutes`
    (by default so few that a new run stops after its first epoch), weights in shards of at most 1 MiB (the GPU calls
    use 16)."""
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
        [str(ROOT / "training" / "gpu_run.sh"), str(TRAIN_CONFIG), minutes, *config_args],
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


def fake_mps(tmp_path, clients=True) -> dict:
    """The environment of a script that runs with tests/fake_mps_control.py as nvidia-cuda-mps-control (recording
    its calls in mps.txt) and its MPS folders under tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "nvidia-cuda-mps-control"
    stub.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "tests" / "fake_mps_control.py"}" "$@"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_MPS_RECORD": str(tmp_path / "mps.txt")}
    return env | {"MPS_FOLDERS": str(tmp_path / "fsr-mps"), **({} if clients else {"FAKE_MPS_CLIENTS": "none"})}


def recorded_mps(tmp_path) -> list[tuple[str, str]]:
    lines = (tmp_path / "mps.txt").read_text().splitlines()
    return [(line.rsplit(" ", 1)[0], line.rsplit(" ", 1)[1]) for line in lines]


PAIR_CONFIGS = [ROOT / f"training/configs/resnet18_{kind}_at_cifar10_b128_30ep.yaml" for kind in ("fsr", "plain")]
# The GPU fast path's settings turned into a short CPU run of the full-width networks
PAIR_ON_CPU = ["precision=fp32", "channels_last=false", "compile=none", "batch_size=50", "train_limit=150"]
PAIR_ON_CPU += ["val_size=50", "test_size=20", "attack_steps=1", "val_attack_steps=1"]


def gpu_pair(tmp_path, env, *settings, **popen):
    env = {**env, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "DATA_DIR": "sample"}
    env |= {"RUN_BASE": str(tmp_path), "AA_IMAGES": "4", "EVAL_ATTACKS": "natural pgd20"}
    script = str(ROOT / "training" / "gpu_pair.sh")
    command = [script, *map(str, PAIR_CONFIGS), "0.0001", *PAIR_ON_CPU, *settings]
    if popen:
        return subprocess.Popen(command, cwd=ROOT, env=env, text=True, **popen)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # two trainings and evaluations at once: CI runs it with the slow tests of this file
def test_gpu_pair_trains_both_full_width_twins_under_mps_and_returns_them_in_8_pieces(tmp_path):
    """training/gpu_pair.sh on the CPU with the stand-in MPS control: MPS started in folders of the call's own,
    both trainings its clients, quit at the end; both full-width twins trained and evaluated in their own folders;
    what comes back is at most 8 files of at most 16 MiB (the weights of two ResNet-18s are 90 MB), which
    reassemble into both folders."""
    result = gpu_pair(tmp_path, fake_mps(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    calls = recorded_mps(tmp_path)
    folder = calls[0][1]
    assert calls[0] == ("start", folder) and calls[-1] == ("quit", folder) and folder.startswith(f"{tmp_path}/fsr-mps-")
    clients = re.search(r"CUDA MPS: server\(s\) \[\d+\], client\(s\) \[(\d+) (\d+)\]", result.stdout)
    assert clients, result.stdout[-3000:]
    files = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert [f.name for f in files] == [f"pair.tar.{i:02d}" for i in range(len(files))] and 2 <= len(files) <= 8
    assert all(f.stat().st_size <= 16 * 2**20 for f in files) and sum(f.stat().st_size for f in files) > 90e6
    joined = subprocess.run(f"cat {tmp_path}/out/pair.tar.* | tar -x -C {tmp_path}/out", shell=True, check=True)
    assert joined.returncode == 0
    for config, kind in zip(PAIR_CONFIGS, ("fsr", "plain")):
        folder = tmp_path / "out" / config.stem
        with tarfile.open(folder / "run.tar") as tar:
            tar.extractall(folder)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["epochs"] == 1 and "pgd20" in json.loads((folder / "robustness.json").read_text())["accuracy"]
        assert load_script("hub/merge_shards.py", "merge_shards").main([str(folder)]) == 0
        model = load_model(folder)
        assert model.pretrained_cfg["architecture"] == f"resnet18_{kind}" and model.num_features == 512  # full width
        assert f"[{config.stem}] " in result.stdout and f"[{config.stem}] exit 0" in result.stdout


def running(pid: int) -> bool:
    """Whether the process runs (a zombie, ended but not yet reaped by its new parent, does not)."""
    for _ in range(50):
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z":
                return False
        except FileNotFoundError:
            return False
        time.sleep(0.1)
    return True


def train_processes(tmp_path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"train.py.*{tmp_path}"], capture_output=True, text=True).stdout
    return found.split()


@pytest.mark.slow
def test_a_stopped_pair_ends_both_trainings_and_quits_mps(tmp_path):
    """SIGTERM (a call's time limit) during both trainings: the script ends them and every process they started,
    waits for them and for their logs, quits MPS and exits 143; nothing of the call runs on."""
    pair = gpu_pair(tmp_path, fake_mps(tmp_path), "epochs=100", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for _ in range(600):  # both trainings under way
        if (
            len(train_processes(tmp_path)) >= 2
            and (tmp_path / "fsr-gpu-run-resnet18_plain_at_cifar10_b128_30ep").exists()
        ):
            break
        time.sleep(0.1)
    time.sleep(3)
    pair.send_signal(signal.SIGTERM)
    out, _ = pair.communicate(timeout=120)
    assert pair.returncode == 143, out[-3000:]
    assert "stopped by SIGTERM: ending both trainings" in out and "CUDA MPS: daemon stopped" in out
    assert train_processes(tmp_path) == [] and recorded_mps(tmp_path)[-1][0] == "quit"


def test_a_daemon_left_by_a_killed_call_is_stopped_by_the_next(tmp_path):
    """A call killed with SIGKILL runs no trap and leaves its MPS daemon: the next call finds it, stops it, says so,
    and starts its own in new folders."""
    env = fake_mps(tmp_path)
    mps = ROOT / "training" / "mps.sh"
    killed = subprocess.run(["bash", "-c", f"source {mps}; mps_start; kill -9 $$"], env=env, capture_output=True)
    assert killed.returncode == -9
    (old_start,) = recorded_mps(tmp_path)
    old_daemon = int((Path(old_start[1]) / "daemon.pid").read_text())
    following = subprocess.run(
        ["bash", "-c", f"source {mps}; mps_start && mps_stop"], env=env, capture_output=True, text=True
    )
    lines = following.stdout.splitlines()
    assert lines[0] == f"CUDA MPS: stopped the daemon an earlier call left running (pipe folder {old_start[1]})"
    assert lines[1].startswith("CUDA MPS: daemon started") and lines[2] == "CUDA MPS: daemon stopped"
    calls = recorded_mps(tmp_path)
    assert calls[1] == ("quit", old_start[1]) and calls[2][0] == "start" and calls[2][1] != old_start[1]
    assert not running(old_daemon)
    assert not list(tmp_path.glob("fsr-mps-*"))  # every folder removed


@pytest.mark.parametrize("connect", [True, False])
def test_mps_counts_only_processes_that_are_its_clients(tmp_path, connect):
    env = fake_mps(tmp_path, clients=connect)
    mps = ROOT / "training" / "mps.sh"
    sleeper = f'"{sys.executable}" -c "import time; time.sleep(8)" bench_at_step.py'
    script = (
        f"source {mps}; mps_start >/dev/null; {sleeper} & {sleeper} & mps_clients 2 4; code=$?; mps_stop; exit $code"
    )
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    if connect:
        assert result.returncode == 0 and re.search(r"client\(s\) \[\d+ \d+\]", result.stdout), result.stdout
    else:
        assert (
            result.returncode == 1 and "0 of 2 processes are MPS clients: the others run without MPS" in result.stdout
        )


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
    out = gpu_script(tmp_path, "call2", env_extra={"AA_IMAGES": "4", "EVAL_ATTACKS": "natural pgd20"}, minutes="5")
    assert len(list(out.glob("model-*.safetensors"))) > 1 and (out / FSR_HEADS_NAME).is_file()
    test = json.loads((out / "metrics.json").read_text())
    assert test["epochs"] == 2 and test["test"]["images"] == 20
    assert (test["train_config"]["shard_mb"], test["train_config"]["stop_after_min"]) == (1, 5)
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
    """Where each plan lives, so that the plain twin's command never resumes the finished FSR run: a fake python
    records each call's arguments (the call then fails for want of weights to return, as it says)."""
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$*" | tee -a {tmp_path / "calls.txt"}\n')
    fake.chmod(0o755)
    for name in ("resnet18_fsr_at_cifar10_b128_30ep", "resnet18_plain_at_cifar10_b128_30ep"):
        result = subprocess.run(
            ["bash", str(ROOT / "training" / "gpu_run.sh"), str(ROOT / f"training/configs/{name}.yaml"), "1"],
            cwd=tmp_path,
            env={**os.environ, "PLAN": "1", "PYTHON": str(fake), "OUT": str(tmp_path / "out")},
            capture_output=True,
            text=True,
        )
        assert result.returncode != 0 and f"runs/gpu-run-{name}/best/*.safetensors" in result.stderr, result.stderr
    trainings = [line for line in (tmp_path / "calls.txt").read_text().splitlines() if "train.py" in line]
    assert [re.search(r"output_dir=(\S+)", line).group(1) for line in trainings] == [
        "runs/gpu-run-resnet18_fsr_at_cifar10_b128_30ep",
        "runs/gpu-run-resnet18_plain_at_cifar10_b128_30ep",
    ]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "gpu-run-resnet18_fsr_at_cifar10_b128_30ep",
        "gpu-run-resnet18_plain_at_cifar10_b128_30ep",
    ]


@pytest.mark.slow
def test_the_gpu_measurement_reports_what_failed_and_counts_only_what_ran(tmp_path):
    """benchmarks/gpu_pair_check.sh dry-run on the CPU (eager, a narrow network, one second of steps each) with the
    stand-in MPS control whose clients cannot connect, and one of the two processes of (ii) crashing (the other then
    gives up at the barrier): (i) and (iv) are measured, (ii) and (iii) say why they are not, the pair's time comes
    from what ran, MPS was started and quit, and the script fails."""
    crash = tmp_path / "python"
    crash.write_text(
        '#!/bin/sh\ncase "$*" in *"--parties 2"*) mkdir "' + str(tmp_path / "crashed") + '" 2>/dev/null && '
        '{ echo "crashed on purpose"; exit 3; } ;; esac\nexec "' + sys.executable + '" "$@"\n'
    )
    crash.chmod(0o755)
    env = {**fake_mps(tmp_path, clients=False), "PYTHON": str(crash)}
    env["STEP_ARGS"] = "--compile none --widths 8 16 32 64 --batch 8 --barrier-timeout 30"
    script = str(ROOT / "benchmarks" / "gpu_pair_check.sh")
    result = subprocess.run(
        [script, "1"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "GPU: none (CPU)"
    assert re.match(r"\(i\)   one process: +[\d.]+ images/s$", lines[1])
    assert lines[2].startswith("(ii)  two processes at once:            failed: process ")
    assert "exited with status 3 (crashed on purpose)" in lines[2]  # one crashed, the other gave up waiting for it
    assert "exited with status 1 (error: 1 of 2 processes reached the barrier within 30 s" in lines[2]
    assert lines[3].startswith("(iii) two under CUDA MPS:               failed: not MPS: CUDA MPS: 0 of 2 processes")
    assert re.match(r"\(iv\)  attack computing all gradients: +[\d.]+ images/s  input-only gradients", lines[4])
    assert re.match(r"a pair of 30-epoch runs .* at \d+ images/s: [\d.]+ min of training", lines[5])
    assert [call for call, _ in recorded_mps(tmp_path)][0] == "start" and recorded_mps(tmp_path)[-1][0] == "quit"


@pytest.mark.slow
def test_a_pair_whose_training_fails_reports_it_and_still_returns_the_other(tmp_path):
    """One training of the pair fails (here: its config does not exist): the other trains to the end, each run's
    exit status is printed, the script exits with the failure's status, and what the other made comes back."""
    env = {**fake_mps(tmp_path), "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "DATA_DIR": "sample"}
    env |= {"RUN_BASE": str(tmp_path), "AA_IMAGES": "0"}
    missing = tmp_path / "no_such_config.yaml"
    command = [str(ROOT / "training" / "gpu_pair.sh"), str(PAIR_CONFIGS[0]), str(missing), "0.0001", *PAIR_ON_CPU]
    result = subprocess.run(command + [TINY_ARGS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode != 0, result.stdout[-3000:]
    assert f"[{PAIR_CONFIGS[0].stem}] exit 0" in result.stdout and "[no_such_config] exit " in result.stdout
    subprocess.run(f"cat {tmp_path}/out/pair.tar.* | tar -x -C {tmp_path}/out", shell=True, check=True)
    with tarfile.open(tmp_path / "out" / PAIR_CONFIGS[0].stem / "run.tar") as tar:
        assert "metrics.json" in tar.getnames()  # the run that worked came back whole
