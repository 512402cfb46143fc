"""Beyond one machine: the commands of docs/training.md's "Several machines, and runs that change size", run as
written (with the tiny network's settings added, and runs/ in a temporary folder): two "machines" on one host, one
CPU process each (gloo on loopback), and a fixed plan started on 4 processes that goes on on 2, then on 1.

Slow (several launches of several processes on 2 cores): `pytest -m slow tests/test_multinode.py`, which CI runs."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from conftest import EQUAL_UPDATE_SETTINGS, ROOT, TINY_ARGS, equal_update_data
from hub_server import free_port
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
LAUNCHERS = {"accelerate": [str(BIN / "accelerate")], "torchrun": [str(BIN / "torchrun")], "python": [sys.executable]}
# The tiny network and data of the tests, added to each command that starts a run (a resume keeps the run's own)
TINY = [TINY_ARGS, "train_limit=300", "val_size=60", "test_size=20", "attack_steps=1", "val_attack_steps=1"]
TINY += ["log_every=0", "time_budget_min=null", "precision=fp32", "channels_last=false"]


def page_commands(marker: str) -> list[str]:
    """The command lines of docs/training.md's bash blocks that contain `marker`."""
    text = (ROOT / "docs" / "training.md").read_text()
    blocks = re.findall(r"^```bash\n(.*?)^```$", text, re.M | re.S)
    return [line for block in blocks for line in block.splitlines() if marker in line and not line.startswith("#")]


def command(line: str, runs, extra=(), port=None) -> tuple[list[str], dict]:
    """A page's command line as argv and environment: leading VAR=value pairs go to the environment, the program to
    this environment's launcher, runs/ to the test's folder, the port to a free one; `extra` settings are added."""
    tokens, env = shlex.split(line), {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    while "=" in tokens[0]:
        key, value = tokens.pop(0).split("=", 1)
        env[key] = value
    argv = [*LAUNCHERS[tokens[0]], *(t.replace("runs/", f"{runs}/") for t in tokens[1:])]
    if port is not None:
        argv[argv.index("--main_process_port") + 1] = str(port)
    if extra:
        argv += extra if "--set" in argv else ["--set", *extra]
    return argv, env


def run_all(commands: list[tuple[list[str], dict]], timeout: float = 600) -> list[subprocess.CompletedProcess]:
    """Start the commands at the same time (the machines of one launch) and wait for all of them, at most `timeout`
    seconds in all (well inside CI's limit). When one fails or the time is up, every launch still running is killed
    with its process group (a rank that died early leaves the others waiting at the rendezvous), and the failure is
    raised with what each printed."""
    logs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in commands]  # never a full pipe
    started = [
        subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=err, text=True, start_new_session=True)
        for (argv, env), (out, err) in zip(commands, logs)
    ]
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in started):
            failed = any(p.returncode not in (None, 0) for p in started)
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    results = []
    for process, (argv, _), files in zip(started, commands, logs):
        process.wait()
        out, err = (f.seek(0) or f.read() for f in files)
        results.append(subprocess.CompletedProcess(argv, process.returncode, out, err))
    if any(r.returncode == -signal.SIGKILL for r in results):
        what = "failed" if any(r.returncode not in (0, -signal.SIGKILL) for r in results) else "ran out of time"
        raise AssertionError(
            f"a launch {what}; the others were killed:\n"
            + "\n".join(f"{r.args[:3]} exit {r.returncode}:\n{r.stderr[-2000:]}" for r in results)
        )
    return results


def checksums(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"\[rank (\d)\] final weights checksum ([-\d.e+]+)", stdout))


def epochs_logged(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_machines_train_the_update_of_one_process_end_equal_and_resume(train_script, tmp_path):
    data = equal_update_data(tmp_path / "data")
    same_update = [TINY_ARGS, f"data_dir={data}", *EQUAL_UPDATE_SETTINGS, "epochs=2", "time_budget_min=null"]
    same_update += ["log_every=0"]
    first, resume = page_commands("--num_machines 2")[:2], page_commands("--num_machines 2")[2:]
    assert len(first) == len(resume) == 2 and all("--resume runs/two-machines" in line for line in resume)
    port = free_port()
    stopped = run_all([command(line, tmp_path, [*same_update, "stop_after_min=0.0001"], port) for line in first])
    assert [r.returncode for r in stopped] == [0, 0], stopped[0].stderr[-3000:] + stopped[1].stderr[-3000:]
    run = tmp_path / "two-machines"
    assert [m["epoch"] for m in epochs_logged(run)] == [0, 1]  # one run folder, written by rank 0 alone
    single = tmp_path / "one"
    assert (
        train_script.main(
            ["--cpu", "--config", str(ROOT / "training" / "configs" / "quickstart_cpu.yaml")]
            + ["--set", *same_update, "epochs=1", f"output_dir={single}"]
        )
        == 0
    )
    two, one = (load_file(str(r / "checkpoint" / "model.safetensors")) for r in (run, single))
    for key in (k for k in one if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))):
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6)
    port = free_port()  # one port for both machines of the launch
    finished = run_all([command(line, tmp_path, ["stop_after_min=null"], port) for line in resume])  # the rest
    assert [r.returncode for r in finished] == [0, 0], finished[0].stderr[-3000:] + finished[1].stderr[-3000:]
    sums = [checksums(r.stdout) for r in finished]
    assert list(sums[0]) == ["0"] and list(sums[1]) == ["1"] and sums[0]["0"] == sums[1]["1"]  # equal weights
    assert [m["epoch"] for m in epochs_logged(run)] == [0, 1, 2] and (run / "model" / "metrics.json").is_file()


def test_a_plan_started_on_four_processes_goes_on_on_two_then_one(train_script, tmp_path):
    lines = page_commands("runs/resized")
    assert [line.split("training/train.py")[0].split()[-1] for line in lines] == ["4", "2", "python"]
    plan = ["epochs=3", "batch_size=48", "warmup_epochs=1.5", "lr_milestones=[0.75]", "stop_after_min=0.0001"]
    argv, env = command(lines[0], tmp_path, [*TINY, *plan])  # its own batch_size=48, stop_after_min=1 are overridden
    (four,) = run_all([(argv, env)])
    assert four.returncode == 0, four.stderr[-3000:]
    argv, env = command(lines[1], tmp_path)
    # one epoch per call, as on a busy machine: a call starts an epoch only where the last one's time fits, so the
    # epoch the four processes logged is made instantaneous and the two stop after theirs
    logged = tmp_path / "resized" / "metrics.jsonl"
    logged.write_text(
        "".join(
            json.dumps({**m, "seconds": 0.0} if "seconds" in m else m) + "\n"
            for m in epochs_logged(tmp_path / "resized")
        )
    )
    argv[argv.index("stop_after_min=1")] = "stop_after_min=0.0001"
    (two,) = run_all([(argv, env)])
    assert two.returncode == 0, two.stderr[-3000:]
    # 48 images do not split over 5 processes: the resume is refused before anything runs, in one line
    argv, env = command(lines[1].replace("--nproc_per_node 2", "--nproc_per_node 5"), tmp_path)
    (refused,) = run_all([(argv, env)])
    assert (
        refused.returncode != 0
        and "batch_size 48 (the global batch) does not split over 5 processes: the run "
        "keeps its global batch: resume it on a number of processes among [1, 2, 3, 4, 6, 8, 12, 16]"
        in refused.stderr
    )
    argv, env = command(lines[2], tmp_path, ["stop_after_min=null"])  # the rest of the plan
    (one,) = run_all([(argv, env)])
    assert one.returncode == 0, one.stderr[-3000:]
    resized = epochs_logged(tmp_path / "resized")
    reference = tmp_path / "reference"
    config = str(ROOT / "training" / "configs" / "quickstart_cpu.yaml")
    settings = [*TINY, *plan[:-1], f"output_dir={reference}"]
    assert train_script.main(["--cpu", "--config", config, "--set", *settings]) == 0
    uninterrupted = epochs_logged(reference)
    assert [(m["epoch"], m["step"]) for m in resized] == [(m["epoch"], m["step"]) for m in uninterrupted]
    assert [m.get("lr") for m in resized] == [m.get("lr") for m in uninterrupted]  # the lr of every epoch's last step
    assert json.loads((tmp_path / "resized" / "model" / "metrics.json").read_text())["sgd_steps"] == 15
