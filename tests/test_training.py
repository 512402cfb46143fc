"""training/train.py on the tiny ResNet-18-FSR and the shipped CIFAR-10 sample: what a run writes, resumes, extends
and fine-tunes. The trainer runs in this process (`main(argv)`) except where the process boundary is the point: a
killed run, two processes (torchrun) and training/gpu_run.sh."""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
import yaml
from accelerate import Accelerator
from conftest import (
    EQUAL_UPDATE_SETTINGS,
    ROOT,
    SHIPPED_FSR,
    TRAIN_CONFIG,
    equal_update_data,
    needs_cifar10,
    tiny_run_args,
)
from safetensors.torch import load_file

import fsr_models
from fsr_models import training
from fsr_models.defenses import defense_loss
from fsr_models.evaluation import make_report, pgd_settings
from fsr_models.evaluation.attacks import pgd
from fsr_models.facts.paper import PAPER_TAGS
from fsr_models.hub.card import model_card
from fsr_models.hub.folders import FSR_HEADS_NAME, load_model, save_folder
from fsr_models.hub.records import read_record
from fsr_models.training.config import scaled_lr

TRAIN = ROOT / "training" / "train.py"
TWO_PROCESSES = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
BASE_LR = scaled_lr(0.1, 50)  # the config's lr is per 128 images; the tiny runs use batches of 50


def run_process(args, launcher=None, check=True):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*(launcher or [sys.executable]), str(TRAIN), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=ROOT,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def results(out):
    return json.loads((out / "model" / "metrics.json").read_text())


def progress(out):
    return json.loads((out / "checkpoint" / "progress.json").read_text())


def weights(path):
    return load_file(str(path))


def assert_same_weights(a, b):
    a, b = weights(a), weights(b)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_a_run_logs_each_epoch_and_writes_a_hub_folder_with_its_test_results(reference_run):
    history = metrics(reference_run)
    assert [m["epoch"] for m in history] == [0, 1, 2] and [m["step"] for m in history] == [0, 5, 10]
    # the lr of each epoch's last step: warm-up over 7.5 steps, then the base lr (the drop falls after epoch 2)
    assert [m["lr"] for m in history[1:]] == pytest.approx([BASE_LR * 5 / 7.5, BASE_LR])
    for key in ("loss", "loss_cls", "loss_fsr", "train_adv_acc", "val_clean_acc", "val_pgd_acc", "images_per_s"):
        assert all(np.isfinite(m[key]) for m in history[1:]), key
    assert all(0 < m["fsr4/mask_mean"] < 1 for m in history)  # FSR health figures, every epoch
    assert list((reference_run / "tensorboard").rglob("events.out.tfevents.*"))
    test = results(reference_run)
    assert (test["train_images"], test["val_images"], test["sgd_steps"], test["epochs"]) == (250, 50, 10, 2)
    report = test["test"]  # the final test, in the format of `python -m fsr_models.evaluate`'s report
    assert (
        report.keys()
        == make_report(
            "m", "cifar10", "sample", 1, 0.0, False, dict.fromkeys(("accuracy", "settings", "ensemble_over", "seconds"))
        ).keys()
    )
    assert report["images"] == 20 and 0 <= report["accuracy"]["pgd20"] <= report["accuracy"]["natural"] <= 1
    assert report["settings"]["pgd20"] == pgd_settings(20, 8 / 255)  # the paper's: step eps/10, no random start
    assert test["best_epoch"] in (1, 2) and test["train_config"]["method"] == "trades"
    model = load_model(reference_run / "model").eval()
    assert model.pretrained_cfg["tag"] == "trades_cifar10" and model.num_classes == 10
    assert json.loads((reference_run / "model" / "config.json").read_text())["lambda_sep"] == 1.0
    assert (reference_run / "model" / FSR_HEADS_NAME).is_file() and (reference_run / "best" / FSR_HEADS_NAME).is_file()
    assert_same_weights(reference_run / "best" / "model.safetensors", reference_run / "model" / "model.safetensors")
    # what the trainer itself keeps in the checkpoint is JSON; the pickles there are Accelerate's optimiser and RNGs
    progress = json.loads((reference_run / "checkpoint" / "progress.json").read_text())
    assert progress["step"] == 10 and progress["epoch"] == 2
    assert not list((reference_run / "checkpoint").glob("custom_checkpoint_*"))  # no pickled scheduler


# train.py in a child that kills itself right after SGD step 8 of a run of 5 steps per epoch: in the middle of epoch
# 2, after epoch 1's checkpoint, inside the warm-up; at that step whatever the machine's load (no race with a reader)
KILLED_AT_STEP_8 = """
import os, runpy, signal, sys
from torch.optim.optimizer import register_optimizer_step_post_hook

steps = 0

def kill_after_step_8(optimizer, args, kwargs):
    global steps
    steps += 1
    if steps == 8:
        os.kill(os.getpid(), signal.SIGKILL)

register_optimizer_step_post_hook(kill_after_step_8)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_killed_run_resumes_to_the_same_weights(reference_run, train_script, tmp_path, capsys):
    killed = tmp_path / "killed"
    args = tiny_run_args(killed)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # as this process
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_AT_STEP_8, str(TRAIN), *args], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert "epoch 2 step 2/5" in proc.stdout and "epoch 2 step 3/" not in proc.stdout, proc.stdout  # killed in step 3
    assert proc.returncode == -signal.SIGKILL and progress(killed)["epoch"] == 1
    capsys.readouterr()
    assert train_script.main([*args, "lr_per_128=0.5", "--resume"]) == 2  # a resumed run keeps its settings
    assert "'lr_per_128'" in capsys.readouterr().err
    assert train_script.main(["--cpu", "--resume", str(killed)]) == 0  # the saved settings: nothing else is needed

    for name in ("model.safetensors", "model_1.safetensors"):  # the network and the FSR heads
        assert_same_weights(reference_run / "checkpoint" / name, killed / "checkpoint" / name)
    history = metrics(killed)
    assert [m["epoch"] for m in history] == [0, 1, 2]  # the killed epoch left no line
    assert [m["lr"] for m in history[1:]] == [m["lr"] for m in metrics(reference_run)[1:]]
    finished = (killed / "model" / "metrics.json").stat().st_mtime_ns
    assert train_script.main([*args, "--resume"]) == 0  # a finished run: nothing to do
    assert (killed / "model" / "metrics.json").stat().st_mtime_ns == finished and len(metrics(killed)) == 3


def test_batches_are_disjoint_shards_of_the_same_global_batches(train_script):
    class Rank:
        def __init__(self, index, count):
            self.process_index, self.num_processes = index, count

    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    single = list(training.shard_batches(50, 10, Rank(0, 1), g()))
    shards = [list(training.shard_batches(50, 10, Rank(r, 2), g())) for r in (0, 1)]
    assert len(single) == len(shards[0]) == len(shards[1]) == 5
    for whole, a, b in zip(single, *shards):
        assert set(a.tolist()).isdisjoint(b.tolist()) and sorted(a.tolist() + b.tolist()) == sorted(whole.tolist())


def checksums(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"\[rank (\d)\] final weights checksum ([-\d.e+]+)", stdout))


def test_two_processes_end_with_identical_weights(tmp_path):
    # TRADES: two forwards through DDP (natural and adversarial batch) before one backward
    result = run_process(tiny_run_args(tmp_path / "ddp", "epochs=1"), launcher=TWO_PROCESSES)
    sums = checksums(result.stdout)
    assert sorted(sums) == ["0", "1"] and sums["0"] == sums["1"], result.stdout[-2000:]
    assert "Grad strides do not match bucket view strides" not in result.stderr  # batches in the weights' format


def test_one_process_and_two_give_the_same_first_update(train_script, tmp_path):
    data = equal_update_data(tmp_path / "data")
    args = [*EQUAL_UPDATE_SETTINGS, "epochs=1"]
    assert train_script.main(tiny_run_args(tmp_path / "one", *args, data_dir=data)) == 0
    run_process(tiny_run_args(tmp_path / "two", *args, data_dir=data), launcher=TWO_PROCESSES)
    one, two = (weights(tmp_path / r / "checkpoint" / "model.safetensors") for r in ("one", "two"))
    start = fsr_models.CifarResNet(layers=[1, 1, 1, 1], widths=[8, 16, 32, 64], fsr_stages=()).state_dict()
    params = [k for k in one if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    for k in params:
        torch.testing.assert_close(one[k], two[k], rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(one[k], start[k]) for k in params)  # an update happened


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(train_script, tmp_path):
    out = tmp_path / "nan"
    assert train_script.main(tiny_run_args(out, "lr_milestones=[0.5]", "lr_gamma=1.0e+20")) == 3
    assert progress(out)["epoch"] == 1 and [m["epoch"] for m in metrics(out)] == [0, 1]
    assert all(torch.isfinite(t.float()).all() for t in weights(out / "checkpoint" / "model.safetensors").values())
    assert load_model(out / "best").num_classes == 10 and not (out / "model").exists()


def test_a_time_budget_fits_the_epochs_to_the_first_epochs_time(train_script, tmp_path):
    out = tmp_path / "budget"
    assert train_script.main(tiny_run_args(out, "epochs=50", "time_budget_min=0.0001")) == 0
    assert results(out)["epochs"] == progress(out)["epochs"] == 1  # a budget far below one epoch: one epoch


@pytest.mark.parametrize("kind", ["zoo", "attached"])
def test_the_attack_twin_shares_the_networks_tensors_and_finds_the_same_images(kind):
    """`input_gradient_twin`, what the compiled attack runs through: the network's own parameter and buffer tensors
    (so SGD's updates are its updates), none requiring a gradient, and the same adversarial images."""
    torch.manual_seed(0)
    if kind == "zoo":
        net = timm.create_model("resnet18_fsr", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64])
    else:
        net = fsr_models.attach_fsr(timm.create_model("test_resnet", num_classes=10))
    twin = training.input_gradient_twin(net.eval())
    assert not any(p.requires_grad for p in twin.parameters()) and all(p.requires_grad for p in net.parameters())
    assert [p.data_ptr() for p in twin.parameters()] == [p.data_ptr() for p in net.parameters()]
    assert all(a is b for a, b in zip(twin.buffers(), net.buffers()))
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    images = []
    for model in (net, twin):
        torch.manual_seed(1)
        images.append(pgd(model, x, y, 8 / 255, 2 / 255, 3, random_start=True))
    assert torch.equal(*images)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(net.train()(x), y).backward()
    optimizer.step()  # updates the tensors in place, and the training-mode BN statistics
    with torch.no_grad():
        assert torch.equal(twin.eval()(x), net.eval()(x))


def test_a_compiled_run_plans_from_its_second_epoch_not_the_one_that_compiled(capsys):
    """With torch.compile the first epoch's time includes compilation (60 s against 14 s on the GPU), so the plan is
    made from the second: a budget of 2 minutes after epochs of 60 s and 10 s fits 5 more epochs, not 2 in all."""
    accelerator = Accelerator(cpu=True)
    budget = training.TrainConfig(compile="default", epochs=30, time_budget_min=2)
    assert training.plan_epoch(budget, 30) == 2 and training.plan_epoch(training.TrainConfig(), 30) == 1
    progress = {"epochs": 30, "milestones": [22, 27]}
    training.plan_from_epoch(budget, progress, 2, 10.0, 70.0, accelerator)
    assert progress == {"epochs": 7, "milestones": [5, 6]}
    pieces = training.TrainConfig(compile="default", epochs=30, stop_after_min=7.6)
    training.plan_from_epoch(pieces, {"epochs": 30}, 2, 14.0, 74.0, accelerator)
    assert capsys.readouterr().out.splitlines()[-1] == (
        "14.0 s per epoch: this call's 7.6 min fit about 27 more epochs (to epoch 29 of 30); the plan needs about 2 "
        "call(s) of 7.6 min in all"
    )


@pytest.mark.parametrize("seconds, elapsed, minutes", [(5.0, 6.0, 0.2), (14.0, 74.0, 7.6), (3.0, 0.0, 0.1)])
def test_the_plan_names_the_epoch_the_call_stops_after(seconds, elapsed, minutes):
    """The epoch that plan_message says a call reaches is the one after which time_limit_reached stops it."""
    accelerator = Accelerator(cpu=True)
    cfg = training.TrainConfig(epochs=40, stop_after_min=minutes)
    named = int(re.search(r"to epoch (\d+) of", training.plan_message(seconds, 1, 40, minutes, elapsed)).group(1))
    epoch = 1
    while epoch < 40 and training.time_limit_reached(cfg, elapsed, seconds, accelerator) is None:
        epoch, elapsed = epoch + 1, elapsed + seconds
    assert named == epoch


def fine_tune_args(out, source):
    """One epoch of the tiny run from the zoo folder `source` at lr 0: what it loads is what it saves."""
    return tiny_run_args(out, f"init={source}", "model_args={}", "lr_per_128=0", "weight_decay=0", "epochs=1")


def test_fine_tuning_from_a_folder_with_a_new_head(train_script, tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("resnet18_fsr", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64], num_classes=100)
    save_folder(source, tmp_path / "source", fsr_loss=fsr_models.FSRLoss.for_model(source))
    out = tmp_path / "tuned"
    assert train_script.main(fine_tune_args(out, tmp_path / "source")) == 0
    tuned = load_model(out / "model")
    assert tuned.fc.out_features == 10 and torch.equal(tuned.conv1.weight, source.conv1.weight)  # lr 0: the source's
    heads = weights(out / "model" / FSR_HEADS_NAME)
    assert heads["heads.0.weight"].shape == (10, 64)  # trained for 100 classes: the heads started afresh


def test_a_fine_tuned_run_records_its_start_by_name_and_no_path_of_this_machine(train_script, tmp_path):
    """metrics.json names the model the run started from (<architecture>.<tag>, not a folder of this machine) with
    that model's final test, and its config holds no path: the card shows both."""
    out = tmp_path / "tuned"
    few = ["train_limit=60", "val_size=10", "test_size=4"]  # the full-width network: what it records, not learns
    assert train_script.main(fine_tune_args(out, SHIPPED_FSR) + few) == 0
    recorded = results(out)
    shipped_test = json.loads((SHIPPED_FSR / "metrics.json").read_text())["test"]
    assert recorded["init"] == {"model": "resnet18_fsr.at_cifar10", "test": shipped_test}
    train = recorded["train_config"]
    assert (train["init"], train["data_dir"], train["output_dir"]) == (SHIPPED_FSR.name, "sample", "runs/tuned")
    assert str(tmp_path) not in json.dumps(recorded) and recorded["test"]["model"] == "resnet18_fsr.at_cifar10"
    card = str(model_card(read_record(out / "model"), "someone/tuned"))
    assert "Fine-tuned from `resnet18_fsr.at_cifar10`" in card
    assert f"pgd20 {100 * shipped_test['accuracy']['pgd20']:.2f}" in card  # the start's figures beside its own


def test_fine_tuning_keeps_the_start_when_no_epoch_beats_it(train_script, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_script, "clean_and_pgd_accuracy", lambda *a, **k: (0.5, 0.65 if not calls else 0.55))
    calls = []
    build = training.loop.train_epoch
    monkeypatch.setattr(train_script, "train_epoch", lambda *a, **k: calls.append(1) or build(*a, **k))
    out = tmp_path / "tuned"
    source = timm.create_model("resnet18_fsr", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64])
    save_folder(source, tmp_path / "source")
    settings = [s for s in fine_tune_args(out, tmp_path / "source") if not s.startswith(("lr_per_128", "epochs"))]
    assert train_script.main([*settings, "lr_per_128=0.5", "epochs=1"]) == 0
    assert "no epoch beat the starting point (65.0% validation PGD accuracy)" in capsys.readouterr().out
    assert results(out)["best_epoch"] == 0 and results(out)["best_val_pgd_acc"] == 0.65
    assert_same_weights(out / "model" / "model.safetensors", tmp_path / "source" / "model.safetensors")


def test_fine_tuning_from_a_tag_without_published_weights_names_the_init_that_works(train_script, tmp_path, capsys):
    assert train_script.main(fine_tune_args(tmp_path / "tuned", "resnet18_fsr.at_cifar10")) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: init=resnet18_fsr.at_cifar10 has no pretrained weights in the local cache")
    assert (
        line.endswith(
            "; or give init=<the folder of trained weights> (a checkout of fsr-zoo holds them in "
            "hub/weights/<architecture>.<tag>)"
        )
        and "local-dir" not in line
    )


def test_cas_and_cifs_train_their_joint_loss_against_an_attack_on_it(train_script, tmp_path, capsys, monkeypatch):
    """A CIFS run: every training attack maximises CIFS's joint loss (its heads' logits asked for) in eval mode, the
    step minimises it, and the run ends in a folder that loads as resnet18_cifs, whose card names CIFS and its loss."""
    calls = []
    real_pgd = training.loop.pgd

    def recording_pgd(model, x, y, *args, loss_fn=None, **kwargs):
        if loss_fn is not None:  # the training attack (validation attacks the logits' cross-entropy)
            out = model(x)
            joint = defense_loss("cifs", out, y, 3.0, "sum").item()
            calls.append((model.func.training, model.keywords, loss_fn(out, y).item(), joint))
        return real_pgd(model, x, y, *args, loss_fn=loss_fn, **kwargs)

    monkeypatch.setattr(training.loop, "pgd", recording_pgd)
    out = tmp_path / "cifs"
    args = tiny_run_args(out, "model=resnet18_cifs", "model_args={layers: [1, 1, 1, 2], widths: [8, 16, 32, 64]}")
    assert train_script.main([*args, "method=at", "defense_beta=3"]) == 0
    assert len(calls) == 10 and all(c[:2] == (False, {"return_defense": True}) for c in calls)
    assert all(c[2] == pytest.approx(c[3]) for c in calls)
    assert "CifarResNet resnet18_cifs: at + CIFS (its joint loss, defense_beta 3)" in capsys.readouterr().out
    model = load_model(out / "model")
    assert model.pretrained_cfg["architecture"] == "resnet18_cifs" and model.cifs_stages == (4,)
    card = model_card(read_record(out / "model"), "fsr-zoo/resnet18_cifs.at_cifar10").text  # the run's own card
    assert "with Channel-wise Importance-based Feature Selection (CIFS) after each block of stage 4" in card
    assert "- Losses: the method's cross-entropy + 3 x the mean cross-entropy of CIFS's auxiliary heads" in card


def test_the_single_step_attack_of_cas_maximises_its_joint_loss(monkeypatch):
    """N-FGSM, the CPU recipe's attack, on CAS: one signed step of the joint loss's input gradient, in eval mode."""
    torch.manual_seed(0)
    net = timm.create_model("resnet18_cas", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64])
    settings = ["attack=nfgsm", "attack_steps=1", "attack_step_size=8/255", "attack_noise=0", "defense_beta=0.5"]
    cfg = training.load_config(None, settings)
    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 5])
    x_eval = x.clone().requires_grad_(True)  # without noise, N-FGSM starts from x
    loss = defense_loss("cas", net.eval()(x_eval, return_defense=True), y, 0.5, "sum")
    (grad,) = torch.autograd.grad(loss, x_eval)
    batches = []
    real_step = net.forward
    monkeypatch.setattr(net, "forward", lambda x_adv, **k: batches.append(x_adv) or real_step(x_adv, **k))
    training.adversarial_loss(cfg, net, net, None, x, y, defense="cas")
    assert torch.equal(batches[-1], (x + 8 / 255 * grad.sign()).clamp(0, 1))  # what the training step ran on


def test_the_training_step_of_cas_is_its_joint_loss_with_the_labels_masks():
    torch.manual_seed(0)
    net = timm.create_model("resnet18_cas", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64])
    cfg = training.load_config(None, ["method=natural", "defense_beta=0.5"])
    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 5])
    loss, loss_cls, loss_fsr, logits = training.adversarial_loss(cfg, net, net, None, x, y, defense="cas")
    expected = net.train()(x, targets=y, return_defense=True)  # batch statistics: the same values again
    assert loss_cls.item() == pytest.approx(defense_loss("cas", expected, y, 0.5).item())
    assert torch.equal(loss, loss_cls) and loss_fsr.item() == 0 and torch.allclose(logits, expected.logits)


@pytest.mark.parametrize(
    "settings, message",
    [
        (["model=resnet18_cas", "method=trades"], "CAS trains with its own loss (method at or natural"),
        (["model=resnet18_plain", "model_args={cas_stages: [4]}"], "places the defense of resnet18_cas: give model"),
        (["model=resnet18_cas", "model_args={cas_stages: []}"], "without it the network is resnet18_plain"),
    ],
)
def test_a_defense_is_refused_where_the_run_would_not_be_its_own(train_script, tmp_path, capsys, settings, message):
    assert train_script.main(tiny_run_args(tmp_path / "run", *settings)) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_the_table4_recipes_differ_only_in_the_network(train_script):
    """FSR's Table 4 compares AT, FD, CAS, CIFS and FSR on ResNet-18, all trained with AT: one recipe, five networks
    (CAS's and CIFS's heads weighted by their papers' beta 2)."""
    names = ["plain", "fd", "cas", "cifs", "fsr"]
    configs = [training.load_config(str(ROOT / f"training/configs/resnet18_{n}_at_cifar10.yaml"), []) for n in names]
    assert [c.model for c in configs] == [f"resnet18_{n}" for n in names]
    own = {"model": None, "output_dir": None}
    assert all({**dataclasses.asdict(c), **own} == {**dataclasses.asdict(configs[0]), **own} for c in configs)
    assert (configs[0].epochs, configs[0].attack_steps, configs[0].defense_beta) == (100, 10, 2.0)


def test_fsr_heads_and_health_travel_with_the_run(train_script, tmp_path, capsys):
    torch.manual_seed(0)
    source = timm.create_model("resnet18_fsr", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64])
    recal_bn = source.fsr4.recalibration_net[4]  # R's second BN: every channel below zero, so R(f-) = 0
    torch.nn.init.zeros_(recal_bn.weight)
    torch.nn.init.constant_(recal_bn.bias, -1.0)
    heads = fsr_models.FSRLoss.for_model(source)
    torch.nn.init.constant_(heads.heads[0].bias, 0.5)
    save_folder(source, tmp_path / "source", fsr_loss=heads)
    out = tmp_path / "tuned"
    assert train_script.main(fine_tune_args(out, tmp_path / "source")) == 0
    assert any(line.startswith("warning: fsr4") for line in capsys.readouterr().out.splitlines())
    for folder in ("best", "model"):
        saved = weights(out / folder / FSR_HEADS_NAME)
        assert torch.equal(saved["heads.0.bias"], torch.full((10,), 0.5))  # lr 0: the source's heads, kept
    history = metrics(out)
    assert history[0]["fsr4/r_contribution"] == 0 and history[1]["fsr4/r_live_2"] == 0
    assert 0 < history[1]["fsr4/mask_mean"] < 1 and history[1]["fsr4/s_live_1"] > 0.5
    assert results(out)["fsr_health"]["fsr4"]["r_contribution"] == 0


def test_bad_configs_are_clear_errors(train_script, tmp_path, capsys, monkeypatch):
    load_config = training.load_config
    with pytest.raises(ValueError, match=r"unknown config key 'epoch' in --set epoch=3"):
        load_config(None, ["epoch=3"])
    with pytest.raises(ValueError, match=r"unknown config key 'lrr' in --set lrr=0.1") as error:
        load_config(str(TRAIN_CONFIG), ["lrr=0.1"])
    assert str(TRAIN_CONFIG) not in str(error.value)  # the YAML file is not blamed for a --set typo
    (tmp_path / "typo.yaml").write_text("lrr: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['lrr'\] in .*typo.yaml"):
        load_config(str(tmp_path / "typo.yaml"), [])
    with pytest.raises(ValueError, match="method"):
        load_config(None, ["method=fgsm"])
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, ["epochs"])

    def one_line_error(argv, named):  # user errors of the command line: exit 2, one line, no traceback
        assert train_script.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and named in err, err

    one_line_error(["--cpu", "--resume", str(tmp_path)], "config.yaml")  # no run in the folder
    (tmp_path / "config.yaml").write_text("model: resnet18_fsr\n")
    one_line_error(["--cpu", "--resume", str(tmp_path)], "checkpoint")
    one_line_error(["--cpu", "--set", f"output_dir={tmp_path}"], f"--resume {tmp_path}")
    one_line_error(["--cpu", "--set", "lrr=0.1"], "'lrr'")
    one_line_error(["--cpu", "--set", "eps=8"], "8/255")
    one_line_error(["--cpu", "--set", "compile=fast"], "compile")
    one_line_error(["--cpu", "--epochs", "5", "--lr-extension", "hold"], "--resume")
    one_line_error(["--cpu", "--set", f"data_dir={tmp_path / 'nowhere'}", f"output_dir={tmp_path / 'run'}"], "nowhere")
    monkeypatch.delenv("FSR_DATA_DIR", raising=False)
    one_line_error(["--cpu", "--set", f"output_dir={tmp_path / 'run2'}"], "--set data_dir=DIR")  # how train.py says it
    assert not (tmp_path / "nowhere").exists()  # a mistyped data folder is not created
    for bad, named in [
        ("lr_per_128=fast", "lr_per_128"),
        ("epochs=2.5", "epochs"),
        ("shuffle=yes please", "shuffle"),
        ("lr_milestones=[75, 90]", "lr_milestones"),
        ("val_size=0", "val_size"),
        ("attack_step_size=2", "2/255"),
        ("eps=1/0", "eps"),
        ("warmup_epochs=-1", "warmup_epochs"),
        ("weight_init=xavier", "weight_init"),
        ("attack=fgsm", "attack must be one of"),
        ("attack=nfgsm", "attack_steps: 1"),  # the paper's PGD-10 settings left with N-FGSM
        ("lr_schedule=cosine", "lr_schedule"),
        ("collapse_fraction=1.5", "collapse_fraction"),
        ("attack_noise=-1", "attack_noise"),
        ("tag=AT cifar", "tag must be"),
    ]:
        with pytest.raises(ValueError, match=re.escape(named)):
            load_config(None, [bad])
    assert load_config(None, ["lr_per_128=1e-3", "epochs=1e2"]).lr_per_128 == 0.001  # YAML reads 1e-3 as a string
    assert load_config(None, ["eps=8/255"]).eps == 8 / 255
    with pytest.raises(ValueError, match="method: at"):
        load_config(None, ["method=trades", "attack=nfgsm", "attack_steps=1"])  # TRADES forms its own attack


def test_a_setting_of_another_version_is_named_in_one_line(tmp_path):
    """A config file, --set or a run folder's config.yaml with a setting this version does not have (here `lr`,
    today's `lr_per_128`) is refused naming the setting, not silently dropped."""
    (tmp_path / "old.yaml").write_text("lr: 0.05\n")
    with pytest.raises(training.ConfigError, match=r"unknown config key\(s\) \['lr'\]"):
        training.load_config(str(tmp_path / "old.yaml"), [])
    with pytest.raises(training.ConfigError, match="unknown config key 'attack_step'"):
        training.load_config(None, ["attack_step=1/255"])
    saved = dataclasses.asdict(training.load_config(None, []))
    saved["lr"] = saved.pop("lr_per_128")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(training.ConfigError, match=r"settings this version does not know, \['lr'\]"):
        training.config.resumed_config(tmp_path / "run", None, [])
    with pytest.raises(training.ConfigError, match=r"progress.json lacks \['milestones', 'step'"):
        progress = {"epoch": 1, "epochs": 2, "best_val_pgd": 0.5, "best_epoch": 1, "train_seconds": 9.0}
        training.checkpoint.initial_progress(training.load_config(None, []), progress)


def test_every_paper_setting_has_a_valid_config(train_script):
    configs = sorted((ROOT / "training" / "configs").glob("*.yaml"))
    settings = {(c.model, f"{c.method}_{c.dataset}") for c in (training.load_config(str(p), []) for p in configs)}
    paper = {(arch, tag) for pair in fsr_models.ARCHITECTURES.values() for arch in pair for tag in PAPER_TAGS}
    assert len(paper) == 48 and paper <= settings
    svhn = training.load_config(str(ROOT / "training/configs/vgg16_fsr_mart_svhn.yaml"), [])
    assert (svhn.lr_per_128, svhn.attack_step_size, svhn.augment, svhn.eps) == (0.01, 1 / 255, False, 8 / 255)
    paper = training.load_config(str(TRAIN_CONFIG), [])
    assert (paper.epochs, paper.batch_size, paper.lr_per_128, paper.attack_steps, paper.attack_step_size) == (
        100,
        128,
        0.1,
        10,
        2 / 255,
    )


@pytest.mark.parametrize("pair", ["resnet18_{}_at_cifar10_b128_30ep", "vgg16_{}_at_cifar10_nfgsm_15ep"])
def test_the_twin_recipes_of_fsr_and_plain_differ_only_in_the_network(train_script, pair):
    configs = [ROOT / f"training/configs/{pair.format(m)}.yaml" for m in ("fsr", "plain")]
    fsr, plain = (training.load_config(str(c), []) for c in configs)
    assert (fsr.model, plain.model) == tuple(pair.split("_")[0] + f"_{m}" for m in ("fsr", "plain"))
    own = {"model": None, "output_dir": None}  # the output folder is named after the model
    assert {**dataclasses.asdict(fsr), **own} == {**dataclasses.asdict(plain), **own}
    # batch 128 is named in the file, so training/gpu_run.sh keeps it instead of its batch 512
    assert f"\nbatch_size: {fsr.batch_size}\n" in configs[0].read_text()
    assert (fsr.batch_size, fsr.warmup_epochs, fsr.weight_init) == (128, 0, "authors")
    if fsr.attack == "nfgsm":  # de Jorge et al.'s recipe on the CPU's fast path, for 15 epochs
        assert (fsr.lr_per_128, fsr.lr_schedule, fsr.epochs, fsr.attack_noise) == (0.2, "cyclic", 15, 2.0)
        assert (fsr.attack_steps, fsr.attack_step_size, fsr.eps) == (1, 8 / 255, 8 / 255)
        assert (fsr.precision, fsr.channels_last, fsr.model_tag) == ("bf16", True, "at_nfgsm_15ep_cifar10")
    else:  # the paper's PGD-10 recipe for 30 epochs
        assert (fsr.lr_per_128, fsr.lr_schedule, fsr.epochs, fsr.attack_steps) == (0.1, "step", 30, 10)


def test_augmentation_is_a_crop_of_the_padded_image_or_its_mirror(train_script):
    torch.manual_seed(0)
    x = torch.rand(64, 3, 32, 32)
    out = training.augment(x)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(64):
        crops = [padded[i, :, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)
    assert not torch.equal(out, x)


def test_learning_rate_warms_up_per_step_then_drops_at_the_milestones(train_script):
    cfg = training.load_config(None, ["warmup_epochs=1.5"])
    factors = [training.lr_factor(cfg, {"step": s, "epochs": 5, "milestones": [3, 4]}, 4) for s in range(20)]
    assert factors[:6] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])  # 1.5 epochs of 4 steps
    assert factors[6:12] == pytest.approx([1.0] * 6) and factors[12:16] == pytest.approx([0.1] * 4)
    assert factors[16:] == pytest.approx([0.01] * 4)
    paper = training.load_config(None, [])
    assert training.lr_factor(paper, {"step": 0, "epochs": 5, "milestones": []}, 4) == 1.0  # no warm-up: the paper's


def test_a_cyclic_learning_rate_rises_to_its_peak_at_half_the_steps_and_falls_to_zero(train_script):
    """N-FGSM's schedule: torch's CyclicLR from 0 to the lr over half the steps and back, stepped per SGD step."""
    cfg = training.load_config(None, ["lr_schedule=cyclic"])
    factors = [training.lr_factor(cfg, {"step": s, "epochs": 5, "milestones": [3, 4]}, 4) for s in range(20)]
    assert factors == pytest.approx([s / 10 for s in range(11)] + [1 - s / 10 for s in range(1, 10)])
    sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    lr = torch.optim.lr_scheduler.CyclicLR(sgd, 0.0, 0.2, step_size_up=10, step_size_down=10)
    reference = []
    for _ in range(20):
        reference.append(lr.get_last_lr()[0] / 0.2)
        sgd.step()
        lr.step()
    assert factors == pytest.approx(reference)


def scripted_validation(train_script, monkeypatch, pgd_by_epoch, clean_by_epoch=None):
    """train.py's validation replaced by the given PGD (and clean, default 0.5) accuracies, epoch 0 first."""
    figures = iter(zip(clean_by_epoch or [0.5] * len(pgd_by_epoch), pgd_by_epoch))
    monkeypatch.setattr(train_script, "clean_and_pgd_accuracy", lambda *args, **kwargs: next(figures))


def test_a_collapse_of_validation_pgd_accuracy_ends_the_run_with_its_best_weights(
    train_script, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "collapse"
    scripted_validation(train_script, monkeypatch, [0.1, 0.4, 0.45, 0.1, 0.5])  # epoch 3 falls below half of 0.45
    assert train_script.main(tiny_run_args(out, "epochs=4")) == 0
    said = capsys.readouterr().out
    assert (
        "catastrophic overfitting at epoch 3: validation PGD accuracy 10.0% fell below 0.5 of its best (45.0%, "
        "epoch 2)" in said
    )
    assert [m["epoch"] for m in metrics(out)] == [0, 1, 2, 3]  # epoch 4 never ran
    test = results(out)
    assert test["collapse"] == {"epoch": 3, "val_pgd_acc": 0.1, "best_val_pgd_acc": 0.45}
    assert (test["epochs"], test["best_epoch"], test["sgd_steps"]) == (3, 2, 15)
    assert progress(out)["epochs"] == 3
    assert_same_weights(out / "best" / "model.safetensors", out / "model" / "model.safetensors")  # epoch 2's
    assert train_script.main(["--cpu", "--resume", str(out)]) == 0  # finished: nothing trains on
    assert "finished all 3 epochs already" in capsys.readouterr().out
    assert train_script.main(["--cpu", "--resume", str(out), "--epochs", "6", "--lr-extension", "hold"]) == 2
    assert "catastrophic overfitting" in capsys.readouterr().err


@pytest.mark.parametrize(
    "pgd_by_epoch, clean_by_epoch, settings, collapse_epoch",
    [
        ([0.4, 0.45, 0.1], None, {}, 3),  # the run above: below half of the best, the clean accuracy held
        ([0.15, 0.05, 0.1], None, {}, None),  # a best below COLLAPSE_FLOOR: a fall from it tells nothing
        ([0.4, 0.25, 0.3], None, {}, None),  # a fall to more than half of the best: robust overfitting, not a collapse
        ([0.22, 0.1, 0.2], None, {}, None),  # below half, but within 3 standard errors of 50 validation images: noise
        ([0.4, 0.1, 0.3], [0.5, 0.13, 0.4], {}, None),  # clean accuracy fell as much: instability, not a collapse
        ([0.4, 0.1, 0.3], None, {"collapse_fraction": 0}, None),  # the check turned off
    ],
)
def test_what_is_a_collapse_and_what_is_not(pgd_by_epoch, clean_by_epoch, settings, collapse_epoch):
    """The epochs 1-3 of a run's validation on 50 images, as train.py notes them after each epoch."""
    cfg = training.TrainConfig(epochs=4, **settings)
    progress = training.checkpoint.initial_progress(cfg, None)
    for epoch, (clean, pgd_acc) in enumerate(zip(clean_by_epoch or [0.5] * 3, pgd_by_epoch), start=1):
        progress["epoch"] = epoch
        training.checkpoint.note_best(progress, epoch, clean, pgd_acc)
        training.checkpoint.end_if_collapsed(cfg, progress, clean, pgd_acc, 50, Accelerator(cpu=True))
        if "collapse" in progress:
            break
    assert progress.get("collapse", {}).get("epoch") == collapse_epoch
    assert progress["epochs"] == (collapse_epoch or 4)


def test_an_nfgsm_run_trains_with_its_attack_and_cyclic_schedule(train_script, tmp_path, capsys, monkeypatch):
    """method at with attack nfgsm: the training step's images come from N-FGSM (eval mode), the lr from the cyclic
    schedule, and the run records its tag."""
    out = tmp_path / "nfgsm"
    calls = []
    nfgsm = training.loop.nfgsm
    monkeypatch.setattr(training.loop, "nfgsm", lambda *a, **k: calls.append(a[0].training) or nfgsm(*a, **k))
    settings = ["method=at", "attack=nfgsm", "attack_steps=1", "attack_step_size=8/255", "lr_schedule=cyclic"]
    assert train_script.main(tiny_run_args(out, *settings, "tag=at_nfgsm_cifar10")) == 0
    assert calls == [False] * 10  # 2 epochs of 5 steps, each attack in eval mode
    assert "at + FSR (N-FGSM) on cifar10" in capsys.readouterr().out
    assert [m["lr"] for m in metrics(out)[1:]] == pytest.approx([BASE_LR * 0.8, BASE_LR * 0.2])  # steps 4, 9 of 10
    assert load_model(out / "model").pretrained_cfg["tag"] == "at_nfgsm_cifar10"


def test_a_fixed_plan_in_pieces_ends_as_one_call_does(reference_run, train_script, tmp_path, capsys):
    pieces = tmp_path / "pieces"
    assert train_script.main(tiny_run_args(pieces, "stop_after_min=0.0001")) == 0  # one epoch per call
    assert progress(pieces)["epoch"] == 1 and (pieces / "best" / "config.json").is_file()
    assert not (pieces / "model").exists()
    # a call whose minutes do not fit the epoch the last one took starts none (it would overrun them)
    checkpoint = (pieces / "checkpoint" / "model.safetensors").read_bytes()
    assert train_script.main(["--cpu", "--resume", str(pieces), "--set", "stop_after_min=0.0001"]) == 0
    stop_line = (
        r"this call is spent: another epoch \(the last took [\d.]+ s\) would not fit after epoch 1 of 2: stopping"
    )
    assert re.search(stop_line, capsys.readouterr().out)
    assert progress(pieces)["epoch"] == 1 and len(metrics(pieces)) == 2
    assert (pieces / "checkpoint" / "model.safetensors").read_bytes() == checkpoint
    assert train_script.main(["--cpu", "--resume", str(pieces), "--set", "stop_after_min=null"]) == 0  # the rest
    assert_same_weights(reference_run / "model" / "model.safetensors", pieces / "model" / "model.safetensors")
    test = results(pieces)
    assert (test["train_images"], test["val_images"], test["sgd_steps"], test["epochs"]) == (250, 50, 10, 2)
    epoch_seconds = [m["seconds"] for m in metrics(pieces)[1:]]
    assert test["train_seconds"] == pytest.approx(sum(epoch_seconds))  # both calls, not the last one


def test_a_finished_run_extends_with_an_explicit_schedule(reference_run, train_script, tmp_path):
    runs = {how: shutil.copytree(reference_run, tmp_path / how) for how in ("hold", "stretch")}
    assert train_script.main(["--cpu", "--resume", str(runs["hold"]), "--set", "epochs=3"]) == 2  # refused
    for how, out in runs.items():
        assert train_script.main(["--cpu", "--resume", str(out), "--epochs", "4", "--lr-extension", how]) == 0
    hold, stretch = ([m["lr"] for m in metrics(out)[1:]] for out in runs.values())
    warm = BASE_LR * 5 / 7.5  # the last step of epoch 1, inside the warm-up
    assert hold == pytest.approx([warm] + [BASE_LR] * 3)  # the added epochs keep the lr the plan ended with
    assert stretch == pytest.approx([warm] + [BASE_LR] * 2 + [BASE_LR / 10])  # the milestone moves to 75 % of 4
    assert results(runs["hold"])["epochs"] == 4
    assert yaml.safe_load((runs["hold"] / "config.yaml").read_text())["epochs"] == 4


# inductor's CPU backend generates and compiles C++ kernels for about a minute on 2 cores with a cold cache: the
# default run checks the graphs themselves (dynamo capture and AOT autograd, run op by op), the slow run the kernels
@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_step_equals_the_eager_step(train_script, backend):
    """torch.compile runs the eval-mode attack (through the input-only twin, as the trainer does) and the train-mode
    step as graphs; with its random numbers drawn as eager draws them (inductor's fallback_random), one SGD step gives
    the same network. In float64: in float32 the
    first layers' gradients of a PGD batch differ by up to 1% between any two kernels (BN's backward over clamped,
    low-variance inputs amplifies rounding), which says nothing about the graphs."""
    import copy

    from torch._inductor import config as inductor_config

    torch.manual_seed(0)
    cfg = training.load_config(None, ["attack_steps=2"])
    eager = timm.create_model("resnet18_fsr", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64]).double()
    graph = copy.deepcopy(eager)
    attack_graph = torch.compile(training.input_gradient_twin(graph), backend=backend)
    nets = {"eager": (eager, eager, eager), "compiled": (graph, attack_graph, torch.compile(graph, backend=backend))}
    x, y = torch.rand(8, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (8,))
    losses, masks = {}, []
    with inductor_config.patch(fallback_random=True):
        for name, (net, attack_net, run_net) in nets.items():
            torch.manual_seed(1)  # the same heads, random start and Gumbel draws for both
            fsr_loss = fsr_models.FSRLoss.for_model(net).double()
            optimizer = torch.optim.SGD(list(net.parameters()) + list(fsr_loss.parameters()), lr=0.1, momentum=0.9)
            loss, *_ = training.adversarial_loss(cfg, attack_net, run_net, fsr_loss, x, y)
            loss.backward()
            optimizer.step()
            losses[name] = loss.item()
            masks.append(run_net(x, return_fsr=True).fsr_parts[0].mask)  # train mode: a fresh Gumbel draw
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-9)
    for (k, a), b in zip(eager.state_dict().items(), graph.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9, msg=k)
    run_net = nets["compiled"][2]  # the compiled train-mode step, whose mask masks[1] is
    assert run_net.training
    again = run_net(x, return_fsr=True).fsr_parts[0].mask
    assert not torch.equal(masks[1], again)  # the noise is drawn afresh at every call of the graph


def test_compiled_graphs_keep_static_shapes_for_the_training_and_validation_batches(monkeypatch):
    """The attack runs at the training batch and at the validation batch: each gets a graph of its own size (by
    default dynamo recompiles the second for any batch size >= 16, so a third size would reuse it)."""
    from torch._dynamo.utils import counters

    compile_ = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda module, mode, dynamic: compile_(module, backend="eager", dynamic=dynamic)
    )
    torch._dynamo.reset()
    net = timm.create_model("resnet18_fsr", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64]).eval()
    attack_net = training.compiled(training.input_gradient_twin(net), "default")
    graphs = []
    for batch in (8, 20, 24):  # training, validation, another size
        x = torch.rand(batch, 3, 32, 32)
        pgd(attack_net, x, torch.randint(0, 10, (batch,)), 8 / 255, 2 / 255, 1)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[1] - graphs[0] == graphs[2] - graphs[1] == 1  # a static graph per size


class OneDevice:
    """The Accelerator's device and process count, for the functions that read only these."""

    def __init__(self, processes):
        self.device, self.num_processes = torch.device("cpu"), processes


def test_the_compiled_validation_attacks_as_many_images_at_once_as_half_the_free_memory_holds(monkeypatch):
    net = timm.create_model("resnet18_fsr", layers=[1, 1, 1, 1], widths=[8, 16, 32, 64])
    random_state = torch.get_rng_state()
    per_image = training.loop.saved_bytes_per_image(net, torch.device("cpu"), bf16=False)
    assert torch.equal(torch.get_rng_state(), random_state)  # a resumed run's draws stay those of an unbroken one
    bf16 = training.loop.saved_bytes_per_image(net, torch.device("cpu"), bf16=True)
    assert 0.45 < bf16 / per_image < 0.55  # activations kept in bf16 take half the memory
    compiled_run = training.Training(net, net, None, None, None, attack_net=object(), step_model=net, lr=0.1)
    cfg = training.load_config(None, [])
    monkeypatch.setattr(training.loop, "free_memory", lambda device: int(2 * 300.5 * per_image))  # 300 images fit
    assert training.validation_batch(cfg, compiled_run, 1000, OneDevice(1)) == 250  # 4 equal batches, no tail
    assert training.validation_batch(cfg, compiled_run, 1000, OneDevice(2)) == 500  # 300 per process: 2 batches
    monkeypatch.setattr(training.loop, "free_memory", lambda device: 10**15)
    assert training.validation_batch(cfg, compiled_run, 1000, OneDevice(3)) == 999  # at once; the tail on rank 0
    eager_run = dataclasses.replace(compiled_run, attack_net=net)
    assert training.validation_batch(cfg, eager_run, 1000, OneDevice(1)) is None  # eager: the training batch
    with pytest.raises(training.ConfigError, match="val_size 1 is smaller than the 2 processes"):
        training.check_processes(training.load_config(None, ["val_size=1"]), 2, resuming=False)


def test_compile_falls_back_to_eager_with_one_line(train_script, monkeypatch, capsys):
    class Accel:
        print = staticmethod(print)

    def broken(*args, **kwargs):
        raise RuntimeError("Compiler: cc not found\nmore detail")

    monkeypatch.setattr(torch, "compile", broken)
    assert not training.compile_available("reduce-overhead", torch.device("cpu"), Accel())
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "compile=reduce-overhead" in out and "cc not found" in out
    monkeypatch.setattr(torch, "compile", lambda fn, mode: fn)  # a toolchain that works: no line, compiled
    assert training.compile_available("default", torch.device("cpu"), Accel())
    assert capsys.readouterr().out == ""


@pytest.mark.slow
@needs_cifar10
def test_short_real_run_raises_pgd_accuracy(train_script, cifar10_dir, tmp_path):
    """That training learns: a quarter-width ResNet-18-FSR, AT on 1,000 real training images (200 held out) for 5
    epochs at batch 25. The untrained network predicts about one class (its clean and PGD accuracy are both about
    chance); training raises the clean accuracy by more than 5 points and the PGD accuracy (an image robust only where
    it is right clean) above the start: one run gave 12.5 -> 22.0 and 12.5 -> 16.5. This depends on the machine's
    arithmetic, hence out of the default run."""
    out = tmp_path / "run"
    assert (
        train_script.main(
            [
                "--cpu",
                "--config",
                str(TRAIN_CONFIG),
                "--set",
                f"data_dir={cifar10_dir}",
                "model_args={widths: [16, 32, 64, 128]}",
                "train_limit=1200",
                "val_size=200",
                "test_size=200",
                "epochs=5",
                "batch_size=25",
                "attack_steps=2",
                "val_attack_steps=2",
                "eval_attack_steps=2",
                f"output_dir={out}",
            ]
        )
        == 0
    )
    history = metrics(out)
    assert max(m["val_clean_acc"] for m in history[1:]) > history[0]["val_clean_acc"] + 0.05, history
    assert max(m["val_pgd_acc"] for m in history[1:]) > history[0]["val_pgd_acc"], history


@pytest.mark.slow
def test_compiled_runs_agree_across_ranks_and_resume_to_the_same_weights(train_script, tmp_path):
    compiled = ["compile=default", "method=at", "warmup_epochs=0"]
    result = run_process(tiny_run_args(tmp_path / "ddp", *compiled), launcher=TWO_PROCESSES)
    sums = checksums(result.stdout)
    assert sorted(sums) == ["0", "1"] and sums["0"] == sums["1"], result.stdout[-2000:]
    assert train_script.main(tiny_run_args(tmp_path / "whole", *compiled)) == 0
    assert train_script.main(tiny_run_args(tmp_path / "pieces", *compiled, "stop_after_min=0.0001")) == 0
    assert train_script.main(["--cpu", "--resume", str(tmp_path / "pieces"), "--set", "stop_after_min=null"]) == 0
    assert_same_weights(
        tmp_path / "whole" / "model" / "model.safetensors", tmp_path / "pieces" / "model" / "model.safetensors"
    )
