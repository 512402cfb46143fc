"""Every Python snippet of the README, the guides in docs/, MODEL_CARD.md and the weights' READMEs runs as a user
copies it: alone, in a fresh interpreter, from the checkout's root (on a copy, so that what a snippet writes stays
out of it), with the Hub offline. Snippets marked ```python hub load published repositories: they run against a real
Hub API on loopback (olah) serving the zoo's repository of resnet18_fsr.at_cifar10 as publishing would upload it."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SHIPPED_FSR, load_script
from hub_server import free_port, git, serving

from fsr_models.facts.networks import HF_ORG
from fsr_models.hub.repository import export_repo

DOCUMENTS = ["README.md", "MODEL_CARD.md", *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/*.md"))]
DOCUMENTS += sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("hub/weights/*/README.md"))
FENCE = re.compile(r"^```python( hub)?\n(.*?)^```$", re.M | re.S)


def snippets() -> list:
    found = []
    for document in DOCUMENTS:
        for i, match in enumerate(FENCE.finditer((ROOT / document).read_text()), start=1):
            found.append(pytest.param(match[2], bool(match[1]), id=f"{document}#{i}"))
    return found


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of what the snippets read: the package's checkout as a user has it (hub/weights by link)."""
    copy = tmp_path_factory.mktemp("checkout")
    (copy / "hub").symlink_to(ROOT / "hub")
    return copy


@pytest.fixture(scope="module")
def hub_endpoint(tmp_path_factory):
    """olah serving fsr-zoo/resnet18_fsr.at_cifar10: the repository hub/publish.py would upload (one commit)."""
    base = tmp_path_factory.mktemp("hub")
    repo = base / "mirrors" / "models" / HF_ORG / SHIPPED_FSR.name
    export_repo(SHIPPED_FSR, repo, zoo=SHIPPED_FSR.parent)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "upload")
    with serving(base / "mirrors", base, f"{HF_ORG}/{SHIPPED_FSR.name}") as endpoint:
        yield endpoint


def test_the_documents_have_snippets():
    assert len(snippets()) >= 8 and any(p.id.startswith("docs/hub.md") for p in snippets())


@pytest.mark.parametrize("code, needs_hub", snippets())
def test_snippet_runs_alone_in_a_fresh_interpreter(code, needs_hub, checkout, tmp_path, request):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_XET": "1"}
    if needs_hub:
        env |= {"HF_ENDPOINT": request.getfixturevalue("hub_endpoint"), "HF_HUB_OFFLINE": "0"}
    else:
        env |= {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}  # nothing may come from a Hub
    work = tmp_path / "checkout"
    shutil.copytree(checkout, work, symlinks=True)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{code}\n--- stderr:\n{result.stderr[-3000:]}"


def test_the_cpu_speed_table_is_the_one_its_measurements_give():
    """docs/benchmarks.md's CPU table, as benchmarks/cpu_table.py writes it from the benchmark outputs kept beside
    it: no figure typed by hand."""
    table = load_script("benchmarks/cpu_table.py", "cpu_table").table()
    assert table in (ROOT / "docs" / "benchmarks.md").read_text()


def test_the_demo_figures_are_those_of_its_recorded_runs():
    """The demo's candidates in docs/benchmarks.md and the README's two figures are those of the runs' metrics.json
    kept in docs/benchmarks/demo/."""
    docs, readme = (ROOT / "docs" / "benchmarks.md").read_text(), (ROOT / "README.md").read_text()
    runs = {
        p.name.split(".")[0]: json.loads(p.read_text()) for p in (ROOT / "docs/benchmarks/demo").glob("*.metrics.json")
    }
    assert len(runs) == 4
    for name, run in runs.items():
        accuracy = run["test"]["accuracy"]
        row = f"| {run['epochs']}"
        assert f"{100 * accuracy['natural']:.2f} | {100 * accuracy['pgd20']:.2f} | {run['best_epoch']} |" in docs, name
        assert row in docs
    assert runs["nfgsm_bf16_54ep"]["train_config"]["epochs"] == 54  # the demo's config trains what was measured
    demo = yaml.safe_load((ROOT / "training/configs/quickstart_cpu.yaml").read_text())
    recorded = runs["nfgsm_bf16_54ep"]["train_config"]
    assert all(
        recorded[k] == v for k, v in demo.items() if k not in ("output_dir", "attack_step_size", "time_budget_min")
    )
    for name in ("nfgsm_bf16_54ep", "pgd5_fp32_15ep"):
        accuracy = runs[name]["test"]["accuracy"]
        assert (
            f"{100 * accuracy['natural']:.2f}% natural" in readme or f"{100 * accuracy['natural']:.2f}% and" in readme
        )
        assert f"{100 * accuracy['pgd20']:.2f}%" in readme
