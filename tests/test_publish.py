"""The Hub side: repository folders, model cards, publishing, and a real Hub API (olah, on loopback) serving them.

Hub clients read HF_ENDPOINT when they are imported, so everything that talks to the server runs in subprocesses.
The upload itself cannot reach a Hub offline: HfApi's two network calls are replaced by recorders, and the
operations they receive are what the mirror then serves.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
import yaml
from conftest import ROOT, SHIPPED_FSR, load_script, trained_looking
from hub_server import free_port, git, run_client, serving
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard, constants
from safetensors.torch import load_file, save_file

import fsr_models
from fsr_models import FSRLoss
from fsr_models.facts.datasets import DATASETS
from fsr_models.hub.folders import FSR_HEADS_NAME, IMAGE_PROCESSOR_NAME, load_model, save_folder
from fsr_models.hub.records import ADAPTIVE_NAME, read_record
from fsr_models.hub.repository import PublishError, check_repo_folder, export_repo, publish

WEIGHTS = SHIPPED_FSR
REPO_ID = "fsr-zoo/resnet18_fsr.at_cifar10"


@pytest.fixture(scope="module")
def repo_folder(tmp_path_factory):
    """The repository of the shipped weights, exported from a folder as training/train.py writes one: 16 MiB shards,
    the FSR auxiliary heads beside them, metrics.json; compared with the zoo's plain baseline."""
    source = tmp_path_factory.mktemp("source") / "model"
    model = load_model(WEIGHTS)
    torch.manual_seed(0)
    save_folder(model, source, max_shard_size="16MB", fsr_loss=FSRLoss.for_model(model))
    shutil.copyfile(WEIGHTS / "metrics.json", source / "metrics.json")
    return export_repo(source, tmp_path_factory.mktemp("export") / "repo", zoo=WEIGHTS.parent)


def record_hub_calls(mp, remote_files: list[str]) -> list:
    """Replace HfApi's network calls by recorders (on the Hub, `remote_files` are there already)."""
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def update_repo_settings(self, repo_id, **kwargs):
        calls.append(("update_repo_settings", repo_id, kwargs))

    def list_repo_files(self, repo_id, **kwargs):
        calls.append(("list_repo_files", repo_id, kwargs))
        return remote_files

    def create_commit(self, repo_id, operations, **kwargs):
        calls.append(("create_commit", repo_id, operations))
        return SimpleNamespace(oid="1" * 40, commit_url=f"https://huggingface.co/{repo_id}/commit/{'1' * 40}")

    for method in (create_repo, update_repo_settings, list_repo_files, create_commit):
        mp.setattr(HfApi, method.__name__, method)
    mp.setenv("HF_TOKEN", "hf_test_token_for_the_recorder")
    return calls


@pytest.fixture
def hub_calls(monkeypatch):
    """The recorded calls, against a repository that holds an earlier upload in shards."""
    return record_hub_calls(
        monkeypatch, [".gitattributes", "README.md", "model-00001-of-00004.safetensors", "model.safetensors.index.json"]
    )


def copy_of(folder, tmp_path):
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_repository_folder_holds_one_safetensors_file_and_the_run_record(repo_folder):
    assert sorted(p.name for p in repo_folder.iterdir()) == [
        "README.md",
        "cas.py",
        "cifs.py",
        "comparison.json",
        "config.json",
        "configuration_fsr.py",
        "fd.py",
        "fsr_core.py",
        FSR_HEADS_NAME,
        "image_processing_fsr.py",
        "metrics.json",
        "model.safetensors",
        "modeling_fsr.py",
        IMAGE_PROCESSOR_NAME,
        "train_config.yaml",
    ]
    merged, shipped = load_file(repo_folder / "model.safetensors"), load_file(WEIGHTS / "model.safetensors")
    assert merged.keys() == shipped.keys() and all(torch.equal(merged[k], shipped[k]) for k in merged)
    assert check_repo_folder(repo_folder) == sorted(p.name for p in repo_folder.iterdir())
    umask = os.umask(0)
    os.umask(umask)
    assert {(p.stat().st_mode & 0o777) for p in repo_folder.iterdir()} == {0o666 & ~umask}  # none 0600


def test_card_metadata_parses_back_into_the_same_eval_results(repo_folder):
    card = ModelCard.load(repo_folder / "README.md")
    metrics = json.loads((WEIGHTS / "metrics.json").read_text())
    results = card.data.eval_results
    assert results == read_record(repo_folder).eval_results
    accuracy = metrics["test"]["accuracy"]  # the trainer's final test, read here without the card's code
    assert [(r.metric_name, r.metric_value, r.dataset_split) for r in results] == [
        ("Natural accuracy", round(100 * accuracy["natural"], 2), "test[:10000]"),
        ("PGD-20 accuracy", round(100 * accuracy["pgd20"], 2), "test[:10000]"),
    ]
    assert results[1].metric_args["steps"] == 20 and results[1].metric_args["random_start"] is False
    assert card.data.model_name == REPO_ID and card.data.library_name == "timm"
    assert card.data.datasets == ["uoft-cs/cifar10"] and card.data.license == "mit"
    for must in (f"hf-hub:{REPO_ID}", "@inproceedings", "## Compared with the plain baseline", FSR_HEADS_NAME):
        assert must in card.text, must


def test_export_refuses_a_model_without_measured_results(tmp_path):
    folder = copy_of(WEIGHTS, tmp_path)
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({"train_config": metrics["train_config"]}))
    with pytest.raises(ValueError, match="no measured robustness"):
        export_repo(folder, tmp_path / "out1")
    (folder / "metrics.json").unlink()
    with pytest.raises(PublishError, match="no metrics.json"):
        export_repo(folder, tmp_path / "out2")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()


@pytest.mark.parametrize(
    "defense, name, where",
    [
        ("cas", "Channel-wise Activation Suppressing (CAS)", "after each block of stage 4"),
        ("cifs", "Channel-wise Importance-based Feature Selection (CIFS)", "after each block of stage 4"),
    ],
)
def test_a_defense_network_exports_with_its_own_card_and_code(defense, name, where, tmp_path):
    """A CAS or CIFS network of the demo recipe (its recorded metrics and adaptive report) makes a repository whose
    card names its defense, its paper, its joint loss and the masks' adaptive attack, and whose own code gives the
    package's logits (export_repo's check)."""
    torch.manual_seed(0)
    model = trained_looking(timm.create_model(f"resnet18_{defense}", widths=(16, 32, 64, 128)))
    save_folder(model, tmp_path / "model")
    demo = ROOT / "docs" / "defenses" / "demo"
    shutil.copyfile(demo / f"resnet18_{defense}.metrics.json", tmp_path / "model" / "metrics.json")
    shutil.copyfile(demo / f"resnet18_{defense}.robustness_adaptive.json", tmp_path / "model" / ADAPTIVE_NAME)
    folder = export_repo(tmp_path / "model", tmp_path / "repo")
    assert {"cas.py", "cifs.py", "fd.py", "fsr_core.py", ADAPTIVE_NAME} <= {p.name for p in folder.iterdir()}
    card = ModelCard.load(folder / "README.md")
    assert card.data.model_name == f"fsr-zoo/resnet18_{defense}.at_cifar10.widths16-32-64-128.train900"
    tag = name.split(" (")[0].lower().replace(" ", "-")
    assert tag in card.data.tags and "feature-separation-and-recalibration" not in card.data.tags
    paper = model.pretrained_cfg["paper_name"]
    for must in (
        f"with {name} {where} of the backbone",
        f'is from "{paper}" ({model.pretrained_cfg["paper_ids"]})',
        "2 x the mean cross-entropy of",
        "the adaptive evaluation (`--attacks adaptive`) attacks the masks too",
        "| CAS/CIFS masks | masks of the likeliest wrong class |",
        f'the {defense.upper()} method is that of "{paper}"',
    ):
        assert must in card.text, must
    assert "without FSR" not in card.text and "FSR splits the feature map" not in card.text


def test_publish_makes_the_repository_hold_exactly_the_folder_in_one_commit(repo_folder, hub_calls):
    result = publish(repo_folder, REPO_ID, private=True)
    assert [(name, repo) for name, repo, _ in hub_calls] == [
        ("create_repo", REPO_ID),
        ("update_repo_settings", REPO_ID),
        ("list_repo_files", REPO_ID),
        ("create_commit", REPO_ID),
    ]
    assert hub_calls[1][2]["private"] is True  # also for a repository that existed (create_repo ignores it then)
    operations = hub_calls[-1][2]
    sent = {
        op.path_in_repo: hashlib.sha256(Path(op.path_or_fileobj).read_bytes()).hexdigest()
        for op in operations
        if isinstance(op, CommitOperationAdd)
    }
    assert sent == {f["path"]: f["sha256"] for f in result["files"]} and result["commit"] == "1" * 40
    deleted = [op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete)]
    assert deleted == result["deleted"] == ["model-00001-of-00004.safetensors", "model.safetensors.index.json"]


def test_export_failure_leaves_nothing_behind(tmp_path):
    folder = copy_of(WEIGHTS, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1_000_000])
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        export_repo(folder, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


@pytest.mark.parametrize("repo_id", ["noslash", "a/b/c", "my org/na me!!"])
def test_malformed_repository_ids_are_refused(repo_folder, tmp_path, repo_id):
    with pytest.raises(PublishError, match="is not a Hub model id"):
        publish(repo_folder, repo_id, dry_run=True)
    with pytest.raises(PublishError, match="is not a Hub model id"):
        export_repo(WEIGHTS, tmp_path / "out", repo_id)


@pytest.mark.parametrize(
    "damage",
    [
        "weights of another network",
        "card without results",
        "card edited by hand",
        "no metrics.json",
        "card for another repository",
        "a pickle beside the weights",
        "image processor edited",
        "heads of another network",
        "comparison edited",
    ],
)
def test_publish_sends_nothing_for_a_bad_folder(repo_folder, tmp_path, hub_calls, damage):
    folder = copy_of(repo_folder, tmp_path)
    if damage == "weights of another network":
        save_file(timm.create_model("resnet18_plain").state_dict(), str(folder / "model.safetensors"))
        expected = "do not load into the architecture"
    elif damage == "card without results":
        (folder / "README.md").write_text("---\nlibrary_name: timm\nmodel_name: fsr-zoo/x\n---\n# a card\n")
        expected = "eval results are not those of metrics.json"
    elif damage == "card edited by hand":
        card = folder / "README.md"
        natural, pgd20 = (
            f"{100 * v:.2f}" for v in json.loads((folder / "metrics.json").read_text())["test"]["accuracy"].values()
        )
        card.write_text(card.read_text().replace(f"| {natural} | {pgd20} |", "| 76.90 | 50.14 |"))
        expected = "not the card generated from metrics.json"
    elif damage == "no metrics.json":
        (folder / "metrics.json").unlink()
        expected = "lacks"
    elif damage == "card for another repository":
        expected = "was written for"
    elif damage == "image processor edited":
        processor = folder / IMAGE_PROCESSOR_NAME
        processor.write_text(processor.read_text().replace('"do_normalize": false', '"do_normalize": true'))
        expected = "is not the image processor of config.json"
    elif damage == "heads of another network":
        save_file(
            FSRLoss.for_model(timm.create_model("resnet18_fsr", widths=[16, 32, 64, 128])).state_dict(),
            str(folder / FSR_HEADS_NAME),
        )
        expected = "is not a set of auxiliary heads of this network"
    elif damage == "comparison edited":
        comparison = json.loads((folder / "comparison.json").read_text())
        comparison["metrics"]["test"]["accuracy"]["pgd20"] = 0.6
        (folder / "comparison.json").write_text(json.dumps(comparison))
        expected = "not the card generated"
    else:
        torch.save({}, folder / "pytorch_model.bin")
        expected = "holds only"
    repo_id = "someone/else" if damage == "card for another repository" else REPO_ID
    with pytest.raises(PublishError, match=expected):
        publish(folder, repo_id)
    assert hub_calls == []


def test_publish_without_a_token_says_how_to_give_one(repo_folder, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", "/nonexistent/token")  # no stored login either
    with pytest.raises(PublishError, match="HF_TOKEN"):
        publish(repo_folder, REPO_ID)


def publish_cli(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "hub" / "publish.py"), *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_command_line_dry_run_then_the_kept_folder_as_it_is(tmp_path, capsys):
    cli = load_script("hub/publish.py", "hub_publish")
    assert cli.main([str(WEIGHTS), "--dry-run", "--out", str(tmp_path / "repo")]) == 0
    assert f"{tmp_path / 'repo'} -> {REPO_ID}" in capsys.readouterr().out
    assert {
        "README.md",
        "config.json",
        "metrics.json",
        "model.safetensors",
        "train_config.yaml",
        IMAGE_PROCESSOR_NAME,
        "comparison.json",
    } <= set(check_repo_folder(tmp_path / "repo"))  # compared with the checkout's hub/weights
    exported = (tmp_path / "repo" / "README.md").stat().st_mtime_ns
    assert cli.main([str(tmp_path / "repo"), "--dry-run"]) == 0  # the step before the upload: no second export
    assert f"{tmp_path / 'repo'} -> {REPO_ID}" in capsys.readouterr().out
    assert (tmp_path / "repo" / "README.md").stat().st_mtime_ns == exported


def test_an_upload_to_the_paper_repository_is_listed_for_the_documents_not_in_the_package(
    repo_folder, hub_calls, monkeypatch, tmp_path, capsys
):
    """The registered tag names its Hub repository whether or not it was uploaded (timm's design): publishing
    writes nothing into the installed package; the checkout's hub/published.json lists it for hub/zoo_card.py."""
    script = load_script("hub/publish.py", "hub_publish")
    listed = tmp_path / "published.json"
    listed.write_text('["vgg16_fsr.at_cifar10"]')
    monkeypatch.setattr(script, "PUBLISHED", listed)
    package = Path(fsr_models.__file__).parent
    before = {p: p.stat().st_mtime_ns for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert script.main([str(repo_folder)]) == 0
    assert [call[0] for call in hub_calls][-1] == "create_commit"
    after = {p: p.stat().st_mtime_ns for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert after == before
    assert json.loads(listed.read_text()) == ["resnet18_fsr.at_cifar10", "vgg16_fsr.at_cifar10"]
    assert "timm.create_model('resnet18_fsr.at_cifar10', pretrained=True) now downloads it" in capsys.readouterr().out


def test_command_line_errors_are_one_line_and_exit_2(tmp_path):
    (tmp_path / "run").mkdir()
    result = publish_cli(tmp_path / "run", "--dry-run")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "holds no config.json" in result.stderr


def test_without_a_token_nothing_is_exported(tmp_path, monkeypatch, capsys):
    import fsr_models.hub.repository

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(fsr_models.hub.repository, "get_token", lambda: None)  # nor a stored login
    assert load_script("hub/publish.py", "hub_publish").main([str(WEIGHTS), "--out", str(tmp_path / "repo")]) == 2
    assert "no Hub token" in capsys.readouterr().err and not (tmp_path / "repo").exists()


def test_the_generated_documents_are_what_the_files_give():
    """The golden-file test of MODEL_CARD.md, results/ and the weights READMEs' measured parts (their figures are
    checked against the files they come from in test_cards.py)."""
    assert load_script("hub/zoo_card.py", "zoo_card").main(["--check"]) == 0


# --- a real Hub API -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mirrors(repo_folder, tmp_path_factory):
    """Git mirrors for olah: the published repository (two commits) and one with a truncated weights file."""
    base = tmp_path_factory.mktemp("mirrors")
    # What publish sends, recorded, becomes the served repository's first commit.
    with pytest.MonkeyPatch.context() as mp:
        calls = record_hub_calls(mp, [])
        plan = publish(repo_folder, REPO_ID)["files"]
    repo = base / "models" / REPO_ID
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for op in calls[-1][2]:  # the operations of create_commit
        shutil.copyfile(op.path_or_fileobj, repo / op.path_in_repo)
    git(repo, "add", ".")
    first = git(repo, "commit", "-qm", "upload")
    # A later upload changes the weights: a pinned revision must keep giving the first ones.
    weights = load_file(repo / "model.safetensors")
    weights["fc.bias"] = weights["fc.bias"] + 1.0 * torch.arange(10)
    save_file(weights, str(repo / "model.safetensors"), metadata={"format": "pt"})
    git(repo, "commit", "-qam", "new head bias")
    broken = base / "models" / "fsr-zoo" / "broken"
    broken.mkdir(parents=True)
    git(broken, "init", "-q", "-b", "main")
    shutil.copyfile(repo_folder / "config.json", broken / "config.json")
    (broken / "model.safetensors").write_bytes((repo_folder / "model.safetensors").read_bytes()[:5_000_000])
    git(broken, "add", ".")
    git(broken, "commit", "-qm", "truncated upload")
    return SimpleNamespace(path=base, first=first, plan=plan)


@pytest.fixture(scope="module")
def hub(mirrors, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hub")
    with serving(mirrors.path, workdir, REPO_ID) as endpoint:
        yield SimpleNamespace(endpoint=endpoint, hf_home=workdir / "hf-home", first=mirrors.first, plan=mirrors.plan)


LOADERS = f"""
    import hashlib, json, timm, torch
    import fsr_models
    from fsr_models.hub.folders import load_any_model, load_fsr_heads, load_model
    from PIL import Image
    from transformers import AutoModelForImageClassification, pipeline
    torch.manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 32, 32)) / 255  # what 8-bit images give, for the pipeline
    images = [Image.fromarray((255 * image).round().byte().permute(1, 2, 0).numpy()) for image in x]
    def logits(model):
        out = model.eval()(x)
        return getattr(out, "logits", out)
    reference = logits(load_model({str(WEIGHTS)!r}))  # the committed weights, read from disk
    def same(model):
        return torch.equal(logits(model), reference)
    FIRST, REPO = "{{first}}", "{REPO_ID}"
    checks = {{
        "timm registered tag, pinned": same(timm.create_model("resnet18_fsr.at_cifar10", pretrained=True,
                                             pretrained_cfg_overlay=dict(hf_hub_id=REPO + "@" + FIRST))),
        "timm hf-hub, pinned": same(timm.create_model(f"hf-hub:{{REPO}}@{{FIRST}}", pretrained=True)),
        "transformers, pinned": same(AutoModelForImageClassification.from_pretrained(REPO, revision=FIRST)),
        "load_model hf-hub, pinned": same(load_model(f"hf-hub:{{REPO}}@{{FIRST}}")),
        "timm registered tag, main, is the later upload": not same(timm.create_model(
            "resnet18_fsr.at_cifar10", pretrained=True)),
        "transformers main == timm hf-hub main": torch.equal(
            logits(AutoModelForImageClassification.from_pretrained(REPO)),
            logits(timm.create_model(f"hf-hub:{{REPO}}", pretrained=True))),
        "pipeline, pinned, names the classes": [r[0]["label"] for r in pipeline(
            "image-classification", model=REPO, revision=FIRST)(images, top_k=1)] == [
            load_model({str(WEIGHTS)!r}).pretrained_cfg["label_names"][i] for i in reference.argmax(1)],
        "with fsr_models imported, trust_remote_code=True still gives its classes": type(
            AutoModelForImageClassification.from_pretrained(REPO, revision=FIRST, trust_remote_code=True)
        ) is fsr_models.hf.FSRForImageClassification,
        "FSR heads, pinned": load_fsr_heads(f"hf-hub:{{REPO}}@{{FIRST}}", fsr_models.FSRLoss.for_model(
            load_model({str(WEIGHTS)!r}))).startswith("loaded the trained FSR auxiliary heads"),
    }}
"""


@pytest.fixture(scope="module")
def online(hub):
    """Every loader, run once against the server: its checks, what the server served (hashes), and the errors of
    loads that must fail."""
    return run_client(
        hub.endpoint,
        hub.hf_home,
        LOADERS.replace("{first}", hub.first),
        """
        from huggingface_hub import hf_hub_download
        served = {name: hashlib.sha256(open(hf_hub_download(REPO, name, revision=FIRST), "rb").read()).hexdigest()
                  for name in ("README.md", "cas.py", "cifs.py", "comparison.json", "config.json",
                               "configuration_fsr.py", "fd.py", "fsr_core.py", "fsr_heads.safetensors",
                               "image_processing_fsr.py", "metrics.json", "model.safetensors", "modeling_fsr.py",
                               "preprocessor_config.json", "train_config.yaml")}
        errors = {}
        for label, load in {
            "repository": lambda: load_model("hf-hub:fsr-zoo/no-such-model"),
            "revision": lambda: load_model("hf-hub:fsr-zoo/resnet18_fsr.at_cifar10@no-such-branch"),
            "tag not uploaded, a command": lambda: load_any_model("vgg16_plain.mart_cifar10"),
            "tag not uploaded, timm": lambda: timm.create_model("vgg16_plain.mart_cifar10", pretrained=True),
            "truncated, load_model": lambda: load_model("hf-hub:fsr-zoo/broken"),
            "truncated, transformers": lambda: AutoModelForImageClassification.from_pretrained("fsr-zoo/broken"),
        }.items():
            try:
                load()
                errors[label] = None
            except (ValueError, RuntimeError) as e:
                errors[label] = str(e)
        print(json.dumps({"checks": checks, "served": served, "errors": errors}))
    """,
    )


def test_every_loader_gets_the_published_weights_from_a_real_hub_api(hub, online):
    assert online["checks"] == {name: True for name in online["checks"]} and len(online["checks"]) == 9
    assert online["served"] == {f["path"]: f["sha256"] for f in hub.plan}  # what publish sends is what is served


def test_without_fsr_models_or_timm_transformers_loads_the_repository_with_its_own_code(hub):
    """trust_remote_code=True where neither fsr_models nor timm can be imported: the repository's code, the
    weights of the pinned upload, the logits of the package's network; the pipeline too."""
    served = run_client(
        hub.endpoint,
        hub.hf_home,
        f"""
        import sys
        sys.modules["fsr_models"] = sys.modules["timm"] = None  # an import of either fails
        import json, torch
        from PIL import Image
        from transformers import AutoModelForImageClassification, pipeline
        model = AutoModelForImageClassification.from_pretrained("{REPO_ID}", revision="{hub.first}",
                                                                trust_remote_code=True)
        torch.manual_seed(0)
        x = torch.rand(4, 3, 32, 32)
        labels = pipeline("image-classification", model="{REPO_ID}", revision="{hub.first}", trust_remote_code=True)
        print(json.dumps({{"class": type(model).__module__ + "." + type(model).__name__,
                          "logits": model.eval()(pixel_values=x).logits.tolist(),
                          "pipeline": labels(Image.new("RGB", (32, 32), (128, 64, 200)), top_k=1)}}))
        """,
    )
    assert served["class"].startswith("transformers_modules.") and served["class"].endswith(
        "modeling_fsr.FSRForImageClassification"
    )
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        reference = load_model(WEIGHTS).eval()(x)
    assert torch.equal(torch.tensor(served["logits"]), reference)
    assert served["pipeline"][0]["label"] in DATASETS["cifar10"].label_names


def test_missing_repository_revision_or_broken_file_is_a_clear_error(online):
    errors = online["errors"]
    assert "fsr-zoo/no-such-model was not found on http://127.0.0.1" in errors["repository"]
    assert "fsr-zoo/resnet18_fsr.at_cifar10 at revision no-such-branch was not found" in errors["revision"]
    assert errors["tag not uploaded, a command"].startswith(
        "vgg16_plain.mart_cifar10 has no weights published on the Hub yet; or give MODEL as the folder of trained "
    )
    assert errors["tag not uploaded, timm"].startswith(
        "vgg16_plain.mart_cifar10 has no weights published on the Hub yet (fsr-zoo/vgg16_plain.mart_cifar10); use "
        "pretrained=False for random init, or load trained weights from their folder with "
        "timm.create_model('local-dir:<folder>', pretrained=True)"
    )
    assert (
        "not a valid safetensors file" in errors["truncated, load_model"]
        and "truncated" in errors["truncated, load_model"]
    )
    assert "not valid safetensors" in errors["truncated, transformers"]


def test_the_cache_serves_every_loader_with_the_hub_offline(hub, online):
    # The cache the online run filled; the endpoint is a port nobody listens on, so nothing can come from a server.
    offline = run_client(
        f"http://127.0.0.1:{free_port()}",
        hub.hf_home,
        LOADERS.replace("{first}", hub.first),
        "print(json.dumps(checks))",
        offline=True,
    )
    assert offline == online["checks"]


def test_an_upload_without_network_is_one_line_and_commits_nothing(tmp_path):
    """A token but no Hub to reach: one line, exit 2, no traceback (the upload is one commit: all or nothing)."""
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = subprocess.run(
        [sys.executable, str(ROOT / "hub" / "publish.py"), str(WEIGHTS), "--out", str(tmp_path / "repo")],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "HF_TOKEN": "hf_test",
            "HF_ENDPOINT": closed,
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        },
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: the upload to {closed} failed (") and "no commit was made" in line
    # what would have been published holds no path of this machine
    published = [(tmp_path / "repo" / name).read_text() for name in ("metrics.json", "train_config.yaml", "README.md")]
    assert not any(re.search(r"(^|[\s\"'=])/(tmp|root|home|work)/", text) for text in published)
    assert yaml.safe_load(published[1])["data_dir"] is None
