"""training/train.py end to end on small real CIFAR-10 slices and a reduced-width ResNet-18-FSR."""
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import fsr_models
from fsr_models.hub import load_model, save_folder

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "training" / "train.py"
SHARED_CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"
SMALL = "model_args={widths: [8, 16, 32, 64]}"
sys.path.insert(0, str(TRAIN.parent))
import train  # noqa: E402

needs_cifar10 = pytest.mark.skipif(not SHARED_CIFAR10.is_dir(), reason="needs the CIFAR-10 arrays in ../shared")


@pytest.fixture(scope="module")
def cifar10_slice(tmp_path_factory):
    """The first 1200 training and 200 test images of the real CIFAR-10, as a data folder."""
    folder = tmp_path_factory.mktemp("cifar10")
    for split, n in (("train", 1200), ("test", 200)):
        with np.load(SHARED_CIFAR10 / f"{split}.npz") as arrays:
            np.savez(folder / f"{split}.npz", x=arrays["x"][:n], y=arrays["y"][:n])
    return folder


def run(args, env_extra=None, launcher=None, check=True):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    cmd = (launcher or [sys.executable]) + [str(TRAIN), "--cpu", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def quick(data, out, *extra):
    return ["--config", str(ROOT / "training/configs/resnet18_fsr_at_cifar10.yaml"), "--set", f"data_dir={data}",
            SMALL, f"output_dir={out}", "attack_steps=2", "val_attack_steps=2", "eval_attack_steps=2", *extra]  # fmt: skip


def metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def weights(path):
    return load_file(str(path))


@needs_cifar10
def test_short_real_run_raises_pgd_accuracy_and_writes_a_hub_folder(cifar10_slice, tmp_path):
    out = tmp_path / "run"
    # batch 25 at the config's lr (0.1 per 128 images, so 0.02 here; 200 SGD steps): over 10 seeds the best epoch
    # beat the untrained network by 8-18 points; at batch 50 and lr 0.2 it fell within 5 points of it for 2 seeds in 8
    run(quick(cifar10_slice, out, "model_args={widths: [16, 32, 64, 128]}", "val_size=200", "test_size=200",
              "epochs=5", "batch_size=25"))  # fmt: skip
    history = metrics(out)
    assert [m["epoch"] for m in history] == [0, 1, 2, 3, 4, 5]
    best = max(m["val_pgd_acc"] for m in history[1:])
    assert best > history[0]["val_pgd_acc"] + 0.05, history
    assert all(k in history[-1] for k in ("loss_fsr", "train_adv_acc", "val_clean_acc", "images_per_s", "lr"))
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    results = json.loads((out / "model" / "metrics.json").read_text())
    assert results["test_images"] == 200 and 0 <= results["pgd2_acc"] <= results["natural_acc"]
    model = load_model(out / "model").eval()
    assert model.pretrained_cfg["tag"] == "at_cifar10" and model.num_classes == 10
    assert json.loads((out / "model" / "config.json").read_text())["lambda_sep"] == 1.0


@needs_cifar10
def test_killed_run_resumes_to_the_same_weights(cifar10_slice, tmp_path):
    args = ["val_size=100", "test_size=50", "epochs=3", "batch_size=50", "train_limit=400", "log_every=1",
            "method=trades", "warmup_epochs=1.5"]  # the kill falls inside the warm-up: its step count is restored
    run(quick(cifar10_slice, tmp_path / "whole", *args))

    cmd = [sys.executable, str(TRAIN), "--cpu", *quick(cifar10_slice, tmp_path / "killed", *args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    for line in proc.stdout:
        if line.startswith("epoch 2 step 3/"):  # mid-epoch, after epoch 1's checkpoint
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((tmp_path / "killed" / "checkpoint" / "progress.json").read_text())["epoch"] == 1
    changed = run(quick(cifar10_slice, tmp_path / "killed", *args, "lr=0.5") + ["--resume"], check=False)
    assert changed.returncode == 2 and "settings that differ" in changed.stderr and "Traceback" not in changed.stderr
    resumed = run(["--resume", str(tmp_path / "killed")])  # the saved settings: nothing else is needed
    assert "resumed" in resumed.stdout

    for name in ("model.safetensors", "model_1.safetensors"):  # the network and the FSR heads
        whole, again = (weights(tmp_path / r / "checkpoint" / name) for r in ("whole", "killed"))
        assert whole.keys() == again.keys()
        assert all(torch.equal(whole[k], again[k]) for k in whole), name
    history = metrics(tmp_path / "killed")
    assert [m["epoch"] for m in history] == [0, 1, 2, 3]  # the killed epoch left no line
    assert [m["lr"] for m in history[1:]] == [m["lr"] for m in metrics(tmp_path / "whole")[1:]]
    again = run(quick(cifar10_slice, tmp_path / "killed", *args) + ["--resume"])
    assert "finished all 3 epochs already" in again.stdout


def test_batches_are_disjoint_shards_of_the_same_global_batches():
    class Rank:
        def __init__(self, index, count):
            self.process_index, self.num_processes = index, count

    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    single = list(train.shard_batches(50, 10, Rank(0, 1), g()))
    shards = [list(train.shard_batches(50, 10, Rank(r, 2), g())) for r in (0, 1)]
    assert len(single) == len(shards[0]) == len(shards[1]) == 5
    for whole, a, b in zip(single, *shards):
        assert set(a.tolist()).isdisjoint(b.tolist()) and sorted(a.tolist() + b.tolist()) == sorted(whole.tolist())


@needs_cifar10
def test_two_processes_end_with_identical_weights(cifar10_slice, tmp_path):
    result = run(
        quick(cifar10_slice, tmp_path / "ddp", "val_size=100", "test_size=50", "epochs=1", "batch_size=50",
              "train_limit=300", "method=trades"),  # TRADES: two forwards through DDP before one backward
        env_extra={"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"},
        launcher=[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    )  # fmt: skip
    sums = dict(re.findall(r"\[rank (\d)\] final weights checksum ([-\d.e+]+)", result.stdout))
    assert sorted(sums) == ["0", "1"] and sums["0"] == sums["1"], result.stdout[-2000:]
    assert "2 process(es)" in result.stdout


@needs_cifar10
def test_one_process_and_two_give_the_same_first_update(cifar10_slice, tmp_path):
    # Each image twice in a row: with shuffling off, both ranks get the same 32 images and one process gets
    # them twice, so per-process BN statistics agree and the averaged gradient equals the single one.
    with np.load(cifar10_slice / "train.npz") as arrays:
        x, y = np.repeat(arrays["x"][:33], 2, axis=0), np.repeat(arrays["y"][:33], 2)
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "train.npz", x=x, y=y)
    (data / "test.npz").symlink_to(cifar10_slice / "test.npz")
    args = ["model=resnet18_plain", "method=natural", "augment=false", "shuffle=false", "val_size=2", "test_size=8",
            "epochs=1", "batch_size=64"]  # fmt: skip
    run(quick(data, tmp_path / "one", *args))
    run(quick(data, tmp_path / "two", *args), env_extra={"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"},
        launcher=[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"])  # fmt: skip
    one, two = (weights(tmp_path / r / "checkpoint" / "model.safetensors") for r in ("one", "two"))
    start = fsr_models.CifarResNet(widths=[8, 16, 32, 64], fsr_stages=()).state_dict()
    params = [k for k in one if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    for k in params:
        torch.testing.assert_close(one[k], two[k], rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(one[k], start[k]) for k in params)  # an update happened


@needs_cifar10
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(cifar10_slice, tmp_path):
    out = tmp_path / "nan"
    result = run(quick(cifar10_slice, out, "val_size=100", "epochs=2", "batch_size=50", "train_limit=300",
                       "lr_milestones=[0.5]", "lr_gamma=1.0e+20"), check=False)  # fmt: skip
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-2000:]
    assert "non-finite loss at epoch 2" in result.stdout and "still holds the last good epoch (1)" in result.stdout
    assert json.loads((out / "checkpoint" / "progress.json").read_text())["epoch"] == 1
    assert all(torch.isfinite(t.float()).all() for t in weights(out / "checkpoint" / "model.safetensors").values())
    assert load_model(out / "best").num_classes == 10


@needs_cifar10
def test_fine_tuning_from_a_folder_with_a_new_head(cifar10_slice, tmp_path):
    source = fsr_models.hub.load_model  # the same loader the trainer uses
    torch.manual_seed(0)
    import timm

    source_model = timm.create_model("resnet18_fsr", widths=[8, 16, 32, 64], num_classes=100)
    save_folder(source_model, tmp_path / "source", fsr_loss=fsr_models.FSRLoss.for_model(source_model))
    out = tmp_path / "tuned"
    result = run(quick(cifar10_slice, out, f"init={tmp_path / 'source'}", "model_args={}", "lr=0", "weight_decay=0",
              "val_size=100", "test_size=20", "epochs=1", "batch_size=50", "train_limit=200"))  # fmt: skip
    tuned = source(out / "model")
    original = source(tmp_path / "source")
    assert tuned.fc.out_features == 10 and original.fc.out_features == 100
    assert torch.equal(tuned.conv1.weight, original.conv1.weight)  # lr 0: the trunk is the source's
    assert "trained for 100 classes, not 10: they start afresh" in result.stdout


def test_bad_configs_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown config key 'epoch' in --set epoch=3"):
        train.load_config(None, ["epoch=3"])
    config = ROOT / "training/configs/resnet18_fsr_at_cifar10.yaml"
    with pytest.raises(ValueError, match=r"unknown config key 'lrr' in --set lrr=0.1") as error:
        train.load_config(str(config), ["lrr=0.1"])
    assert str(config) not in str(error.value)  # the YAML file is not blamed for a --set typo
    (tmp_path / "typo.yaml").write_text("lrr: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['lrr'\] in .*typo.yaml"):
        train.load_config(str(tmp_path / "typo.yaml"), [])
    with pytest.raises(ValueError, match="method must be one of"):
        train.load_config(None, ["method=fgsm"])
    with pytest.raises(ValueError, match="key=value"):
        train.load_config(None, ["epochs"])

    def one_line_error(argv, message):  # user errors of the command line: exit 2, one line, no traceback
        assert train.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err

    one_line_error(["--cpu", "--resume", str(tmp_path)], "holds no run")
    (tmp_path / "config.yaml").write_text("model: resnet18_fsr\n")
    one_line_error(["--cpu", "--resume", str(tmp_path)], "no checkpoint")
    one_line_error(["--cpu", "--set", f"output_dir={tmp_path}"], f"--resume {tmp_path}")
    one_line_error(["--cpu", "--set", "lrr=0.1"], "unknown config key 'lrr'")
    one_line_error(["--cpu", "--set", "eps=8"], "did you mean 8/255?")
    one_line_error(["--cpu", "--set", "compile=fast"], "compile must be one of")
    one_line_error(["--cpu", "--epochs", "5", "--lr-extension", "hold"], "use them with --resume")
    one_line_error(["--cpu", "--set", f"data_dir={tmp_path / 'nowhere'}", f"output_dir={tmp_path / 'run'}"],
                   "nowhere")  # fmt: skip
    assert not (tmp_path / "nowhere").exists()  # a mistyped data folder is not created
    for bad, message in [("lr=fast", "lr must be a number"), ("epochs=2.5", "whole number"),
                         ("shuffle=yes please", "true or false"), ("lr_milestones=[75, 90]", "fractions"),
                         ("val_size=0", "at least 1"), ("attack_step=2", "2/255"), ("eps=1/0", "fraction"),
                         ("warmup_epochs=-1", "not be negative"), ("weight_init=xavier", "weight_init")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            train.load_config(None, [bad])
    assert train.load_config(None, ["lr=1e-3", "epochs=1e2"]).lr == 0.001  # YAML reads 1e-3 as a string
    assert train.load_config(None, ["eps=8/255"]).eps == 8 / 255


def test_every_paper_setting_has_a_valid_config():
    configs = sorted((ROOT / "training" / "configs").glob("*.yaml"))
    settings = {(c.model, c.method, c.dataset) for c in (train.load_config(str(p), []) for p in configs)}
    assert len(settings) == 48
    svhn = train.load_config(str(ROOT / "training/configs/vgg16_fsr_mart_svhn.yaml"), [])
    assert (svhn.lr, svhn.attack_step, svhn.augment, svhn.eps) == (0.01, 1 / 255, False, 8 / 255)
    paper = train.load_config(str(ROOT / "training/configs/resnet18_fsr_at_cifar10.yaml"), [])
    assert (paper.epochs, paper.batch_size, paper.lr, paper.attack_steps, paper.attack_step) == (100, 128, 0.1, 10, 2 / 255)


def test_the_gpu_recipes_of_fsr_and_plain_differ_only_in_the_network():
    fsr, plain = (train.load_config(str(ROOT / f"training/configs/resnet18_{m}_at_cifar10_b128_30ep.yaml"), [])
                  for m in ("fsr", "plain"))  # fmt: skip
    assert (fsr.model, plain.model) == ("resnet18_fsr", "resnet18_plain")
    own = {"model": None, "output_dir": None}  # the output folder is named after the model
    assert {**dataclasses.asdict(fsr), **own} == {**dataclasses.asdict(plain), **own}
    # batch 128 is named in the file, so training/gpu_run.sh keeps it instead of its batch 512
    assert (fsr.batch_size, fsr.lr, fsr.epochs, fsr.warmup_epochs, fsr.weight_init) == (128, 0.1, 30, 0, "authors")
    assert "\nbatch_size: 128\n" in (ROOT / "training/configs/resnet18_fsr_at_cifar10_b128_30ep.yaml").read_text()


def test_augmentation_is_a_crop_of_the_padded_image_or_its_mirror():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 32, 32)
    out = train.augment(x)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(64):
        crops = [padded[i, :, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)
    assert not torch.equal(out, x)


def gpu_script(config_args, env_extra, tmp_path, out="out"):
    env = {**os.environ, "OUT": str(tmp_path / out), "PYTHON": sys.executable, "AA_SECONDS": "600", **env_extra}
    result = subprocess.run(
        [str(ROOT / "training" / "gpu_run.sh"), str(ROOT / "training/configs/resnet18_fsr_at_cifar10.yaml"),
         *config_args, "precision=fp32", "channels_last=false", "compile=none", "batch_size=50", "val_size=100",
         "test_size=50", "attack_steps=2", "val_attack_steps=2", "eval_attack_steps=2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    files = sorted((tmp_path / out).iterdir())
    assert len(files) <= 8 and all(f.stat().st_size <= 16 * 2**20 for f in files), files
    with tarfile.open(tmp_path / out / "run.tar") as tar:  # every file but the weight shards, in one
        tar.extractall(tmp_path / out)
    return result


@needs_cifar10
def test_gpu_script_runs_on_cpu_and_leaves_at_most_8_files_of_16_mib(cifar10_slice, tmp_path):
    env = {"RUN_DIR": str(tmp_path / "run"), "DATA_DIR": str(cifar10_slice), "AA_IMAGES": "4"}
    gpu_script(["0.1", "train_limit=300"], env, tmp_path)
    out = tmp_path / "out"
    assert len(list(out.glob("model-*.safetensors"))) > 1  # full-width ResNet-18-FSR: sharded
    results = json.loads((out / "metrics.json").read_text())
    assert results["train_config"]["shard_mb"] == 16 and results["test_images"] == 50
    report = json.loads((out / "robustness.json").read_text())  # AutoAttack and the curve, first 4 test images
    accuracy = report["accuracy"]
    assert report["images"] == 4 and accuracy["autoattack"] <= accuracy["pgd20"] <= accuracy["natural"]
    assert (out / "robustness_curve.png").stat().st_size > 0 and (out / "fsr_heads.safetensors").is_file()
    assert "epoch 1 " in (out / "train.log").read_text()
    assert load_model(out).num_classes == 10


@needs_cifar10
def test_gpu_script_runs_a_fixed_plan_over_calls(cifar10_slice, tmp_path):
    env = {"PLAN": "1", "RUN_DIR": str(tmp_path / "run"), "DATA_DIR": str(cifar10_slice), "AA_IMAGES": "0"}
    first = gpu_script(["0.0001", "epochs=2", SMALL, "train_limit=250"], env, tmp_path, "call1")
    assert "this call is spent after epoch 1 of 2" in first.stdout
    assert not (tmp_path / "call1" / "metrics.json").exists() and load_model(tmp_path / "call1").num_classes == 10
    second = gpu_script(["0.0001"], env, tmp_path, "call2")  # the same command resumes and finishes the plan
    assert "resumed" in second.stdout
    results = json.loads((tmp_path / "call2" / "metrics.json").read_text())
    assert results["epochs"] == 2 and results["train_config"]["stop_after_min"] == 0.0001
    log = (tmp_path / "call2" / "train.log").read_text()
    assert "epoch 1 " in log and "epoch 2 " in log  # the log of both calls


def test_gpu_script_keeps_each_configs_plan_in_a_folder_of_its_own(tmp_path):
    # PYTHON=true turns every Python step into a no-op (the call then fails for want of weights): what is left is
    # where each plan lives, so that the plain twin's command never resumes the finished FSR run
    for name in ("resnet18_fsr_at_cifar10_b128_30ep", "resnet18_plain_at_cifar10_b128_30ep"):
        subprocess.run(["bash", str(ROOT / "training" / "gpu_run.sh"), str(ROOT / f"training/configs/{name}.yaml"), "1"],
                       cwd=tmp_path, env={**os.environ, "PLAN": "1", "PYTHON": "true", "OUT": str(tmp_path / "out")},
                       capture_output=True)  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "gpu-run-resnet18_fsr_at_cifar10_b128_30ep", "gpu-run-resnet18_plain_at_cifar10_b128_30ep"]


def test_learning_rate_warms_up_per_step_then_drops_at_the_milestones():
    factors = [train.lr_factor(s, 4, 1.5, [3, 4], 0.1) for s in range(20)]
    assert factors[:6] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])  # 1.5 epochs of 4 steps
    assert factors[6:12] == pytest.approx([1.0] * 6) and factors[12:16] == pytest.approx([0.1] * 4)
    assert factors[16:] == pytest.approx([0.01] * 4)
    assert train.lr_factor(0, 4, 0.0, [], 0.1) == 1.0  # no warm-up: the paper's recipe


@needs_cifar10
def test_a_fixed_plan_in_pieces_ends_as_one_call_does(cifar10_slice, tmp_path):
    args = ["val_size=100", "test_size=50", "epochs=3", "batch_size=50", "train_limit=250", "warmup_epochs=1"]
    run(quick(cifar10_slice, tmp_path / "whole", *args))
    first = run(quick(cifar10_slice, tmp_path / "pieces", *args, "stop_after_min=0.0001"))  # one epoch per call
    assert "this call is spent after epoch 1 of 3" in first.stdout and f"--resume {tmp_path / 'pieces'}" in first.stdout
    assert (tmp_path / "pieces" / "best" / "config.json").is_file() and not (tmp_path / "pieces" / "model").exists()
    second = run(["--resume", str(tmp_path / "pieces")])
    assert "this call's 0.0001 min fit about 1 epochs (to epoch 2 of 3)" in second.stdout
    run(["--resume", str(tmp_path / "pieces")])
    whole, pieces = (weights(tmp_path / r / "model" / "model.safetensors") for r in ("whole", "pieces"))
    assert all(torch.equal(whole[k], pieces[k]) for k in whole)
    results = json.loads((tmp_path / "pieces" / "model" / "metrics.json").read_text())
    assert (results["train_images"], results["val_images"], results["sgd_steps"]) == (150, 100, 9)
    epoch_seconds = [m["seconds"] for m in metrics(tmp_path / "pieces")[1:]]
    assert results["train_seconds"] == pytest.approx(sum(epoch_seconds))  # all three calls, not the last one


@needs_cifar10
def test_a_finished_run_extends_with_an_explicit_schedule(cifar10_slice, tmp_path):
    args = ["val_size=100", "test_size=50", "epochs=2", "batch_size=50", "train_limit=250", "lr_milestones=[0.75]"]
    for how in ("hold", "stretch"):
        run(quick(cifar10_slice, tmp_path / how, *args))
    refused = run(["--resume", str(tmp_path / "hold"), "--set", "epochs=3"], check=False)
    assert refused.returncode == 2 and "--epochs N with --lr-extension" in refused.stderr
    for how in ("hold", "stretch"):
        run(["--resume", str(tmp_path / how), "--epochs", "4", "--lr-extension", how])
    hold, stretch = ([m["lr"] for m in metrics(tmp_path / how)[1:]] for how in ("hold", "stretch"))
    base = 0.1 * 50 / 128  # the milestone at 75 % of 2 epochs is epoch 2: the 2-epoch run never reached it
    assert hold == pytest.approx([base] * 4)  # the added epochs keep the lr the plan ended with
    assert stretch == pytest.approx([base] * 3 + [base / 10])  # the milestone moves to 75 % of 4 epochs
    assert json.loads((tmp_path / "hold" / "model" / "metrics.json").read_text())["epochs"] == 4
    assert "epochs: 4" in (tmp_path / "hold" / "config.yaml").read_text()


@needs_cifar10
def test_fsr_heads_and_health_travel_with_the_run(cifar10_slice, tmp_path):
    torch.manual_seed(0)
    import timm

    from fsr_models.hub import FSR_HEADS_NAME

    source = timm.create_model("resnet18_fsr", widths=[8, 16, 32, 64])
    recal_bn = source.fsr4.recalibration_net[4]  # R's second BN: every channel below zero, so R(f-) = 0
    torch.nn.init.zeros_(recal_bn.weight)
    torch.nn.init.constant_(recal_bn.bias, -1.0)
    heads = fsr_models.FSRLoss.for_model(source)
    torch.nn.init.constant_(heads.heads[0].bias, 0.5)
    save_folder(source, tmp_path / "source", fsr_loss=heads)
    out = tmp_path / "tuned"
    result = run(quick(cifar10_slice, out, f"init={tmp_path / 'source'}", "model_args={}", "lr=0", "weight_decay=0",
                       "val_size=100", "test_size=20", "epochs=1", "batch_size=50", "train_limit=200"))  # fmt: skip
    assert f"loaded the trained FSR auxiliary heads of {tmp_path / 'source'}" in result.stdout
    assert "warning: fsr4: the Recalibration Net is dead" in result.stdout
    for folder in ("best", "model"):
        saved = weights(out / folder / FSR_HEADS_NAME)
        assert torch.equal(saved["heads.0.bias"], torch.full((10,), 0.5))  # lr 0: the source's heads, kept
    history = metrics(out)
    assert history[0]["fsr4/r_contribution"] == 0 and history[1]["fsr4/r_live_2"] == 0
    assert 0 < history[1]["fsr4/mask_mean"] < 1 and history[1]["fsr4/s_live_1"] > 0.5
    results = json.loads((out / "model" / "metrics.json").read_text())
    assert results["fsr_health"]["fsr4"]["r_contribution"] == 0


def test_compiled_step_equals_the_eager_step():
    """inductor's CPU backend runs the eval-mode attack and the train-mode step as graphs; with its random
    numbers drawn as eager draws them (fallback_random), one SGD step gives the same network. In float64: in
    float32 the first layers' gradients of a PGD batch differ by up to 1% between any two kernels (BN's backward
    over clamped, low-variance inputs amplifies rounding), which says nothing about the graphs."""
    import copy

    import timm
    from torch._inductor import config as inductor_config

    torch.manual_seed(0)
    cfg = train.load_config(None, ["attack_steps=2"])
    eager = timm.create_model("resnet18_fsr", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64]).double()
    graph = copy.deepcopy(eager)
    nets = {"eager": (eager, eager), "compiled": (graph, torch.compile(graph))}
    x, y = torch.rand(8, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (8,))
    losses, masks = {}, []
    with inductor_config.patch(fallback_random=True):
        for name, (net, run_net) in nets.items():
            torch.manual_seed(1)  # the same heads, random start and Gumbel draws for both
            fsr_loss = fsr_models.FSRLoss.for_model(net).double()
            optimizer = torch.optim.SGD(list(net.parameters()) + list(fsr_loss.parameters()), lr=0.1, momentum=0.9)
            loss, *_ = train.adversarial_loss(cfg, run_net, run_net, fsr_loss, x, y)
            loss.backward()
            optimizer.step()
            losses[name] = loss.item()
            masks.append(run_net(x, return_fsr=True).fsr_parts[0].mask)  # train mode: a fresh Gumbel draw
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-9)
    for (k, a), b in zip(eager.state_dict().items(), graph.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9, msg=k)
    again = nets["compiled"][1](x, return_fsr=True).fsr_parts[0].mask
    assert not torch.equal(masks[1], again)  # the noise is drawn afresh at every call of the graph


def test_compile_falls_back_to_eager_with_one_line(monkeypatch, capsys):
    class Accel:
        print = staticmethod(print)

    def broken(*args, **kwargs):
        raise RuntimeError("Compiler: cc not found\nmore detail")

    monkeypatch.setattr(torch, "compile", broken)
    assert not train.compile_available("reduce-overhead", torch.device("cpu"), Accel())
    out = capsys.readouterr().out
    assert out == "compile=reduce-overhead is not available here (RuntimeError: Compiler: cc not found); running eager\n"
    monkeypatch.undo()  # the real toolchain works here
    assert train.compile_available("default", torch.device("cpu"), Accel())


@pytest.mark.slow
@needs_cifar10
def test_compiled_runs_agree_across_ranks_and_resume_to_the_same_weights(cifar10_slice, tmp_path):
    args = ["val_size=100", "test_size=50", "epochs=2", "batch_size=50", "train_limit=300", "compile=default",
            "model_args={layers: [1, 1, 1, 1], widths: [8, 16, 32, 64]}"]  # fmt: skip
    result = run(quick(cifar10_slice, tmp_path / "ddp", *args),
                 env_extra={"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"},
                 launcher=[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"])
    sums = dict(re.findall(r"\[rank (\d)\] final weights checksum ([-\d.e+]+)", result.stdout))
    assert sorted(sums) == ["0", "1"] and sums["0"] == sums["1"], result.stdout[-2000:]
    run(quick(cifar10_slice, tmp_path / "whole", *args))
    run(quick(cifar10_slice, tmp_path / "pieces", *args, "stop_after_min=0.0001"))
    run(["--resume", str(tmp_path / "pieces")])
    whole, pieces = (weights(tmp_path / r / "model" / "model.safetensors") for r in ("whole", "pieces"))
    assert all(torch.equal(whole[k], pieces[k]) for k in whole)
