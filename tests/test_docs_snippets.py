"""Every Python snippet of the README, the guides in docs/, MODEL_CARD.md and the weights' READMEs runs as a user
copies it: alone, in a fresh interpreter, from the checkout's root (on a copy, so that what a snippet writes stays
out of it), with the Hub offline. Snippets marked ```python hub load published repositories: they run against a real
Hub API on loopback (olah) serving the zoo's repository of resnet18_fsr.at_cifar10 as publishing would upload it."""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import yaml
from conftest import ROOT, SHIPPED_FSR, load_script
from hub_server import free_port, git, serving

import fsr_models  # noqa: F401  (registers the networks with timm)
from fsr_models.facts.networks import HF_ORG
from fsr_models.hub.repository import export_repo

DOCUMENTS = ["README.md", "MODEL_CARD.md", *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/*.md"))]
DOCUMENTS += sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("hub/weights/*/README.md"))
FENCE = re.compile(r"^```python( hub)?\n(.*?)^```$", re.M | re.S)


WEIGHTS_FOLDER = re.compile(r"hub/weights/[\w.-]+")


def snippets() -> list:
    """Each snippet once: those that differ only in the weights folder they load (every card's, from one template)
    run once; tests/test_weights.py loads every folder the ways they do."""
    found, seen = [], set()
    for document in DOCUMENTS:
        for i, match in enumerate(FENCE.finditer((ROOT / document).read_text()), start=1):
            code, needs_hub = match[2], bool(match[1])
            template = (WEIGHTS_FOLDER.sub("hub/weights/FOLDER", code), needs_hub)
            if template not in seen:
                seen.add(template)
                found.append(pytest.param(code, needs_hub, id=f"{document}#{i}"))
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


def test_each_study_table_in_the_convergence_guide_is_the_one_its_study_wrote():
    """docs/convergence.md shows each study's table as `training/study.py` wrote it (docs/convergence/<study>/table.md),
    not retyped."""
    tables = sorted((ROOT / "docs" / "convergence").glob("*/table.md"))
    assert len(tables) >= 2
    guide = (ROOT / "docs" / "convergence.md").read_text()
    for table in tables:
        assert table.read_text().strip() in guide, table
    # the fast-path study's account of R, from its runs' final health
    health = [
        next(iter(json.loads(p.read_text())["fsr_health"].values()))
        for p in (ROOT / "docs/convergence/fast_path").glob("*.json")
    ]
    r, live = [h["r_contribution"] for h in health], [h["r_live_2"] for h in health]
    said = f"R contributes {min(r):.2f}-{max(r):.2f} of |f-| with {100 * min(live):.0f}-{100 * max(live):.0f}% of"
    assert said in plain_text(ROOT / "docs" / "convergence.md")


def plain_text(path: Path) -> str:
    """A document's text with its line breaks and runs of spaces as single spaces (figures are quoted across lines)."""
    return " ".join(path.read_text().split())


def test_the_attach_guides_figures_are_those_of_its_runs():
    """docs/attach.md's short run, read from the runs' records kept in docs/attach/: the per-epoch table, the
    final tests, the minutes of training, R's range and the adaptive evaluation's row."""
    guide, records = plain_text(ROOT / "docs" / "attach.md"), ROOT / "docs" / "attach"
    curves, finals = {}, {}
    for kind in ("fsr", "plain"):
        name = f"timm_resnet18_{kind}_at_cifar10_cpu"
        curves[kind] = [json.loads(line) for line in (records / f"{name}.metrics.jsonl").read_text().splitlines()]
        finals[kind] = json.loads((records / f"{name}.metrics.json").read_text())
    for fsr, plain in zip(curves["fsr"], curves["plain"]):
        assert fsr["epoch"] == plain["epoch"]
        r = next(v for k, v in fsr.items() if k.endswith("r_contribution"))
        row = (
            f"| {fsr['epoch']} | {100 * fsr['val_clean_acc']:.1f} / {100 * fsr['val_pgd_acc']:.1f} | {r:.2g} | "
            f"{100 * plain['val_clean_acc']:.1f} / {100 * plain['val_pgd_acc']:.1f} |"
        )
        assert row in guide, row
    trained = [m for m in curves["fsr"] if m["epoch"] > 0]
    r = [next(v for k, v in m.items() if k.endswith("r_contribution")) for m in trained]
    live = [next(v for k, v in m.items() if k.endswith("r_live_2")) for m in trained]
    assert f"R's contribution {min(r):.2f}-{max(r):.2f}, {100 * min(live):.0f}-{100 * max(live):.0f} %" in guide
    fsr, plain = (finals[k]["test"]["accuracy"] for k in ("fsr", "plain"))
    assert (
        f"FSR {100 * fsr['natural']:.1f} % natural, {100 * fsr['pgd20']:.1f} % PGD-20; plain "
        f"{100 * plain['natural']:.1f} % / {100 * plain['pgd20']:.1f} %"
    ) in guide
    minutes = [finals[k]["train_seconds"] / 60 for k in ("fsr", "plain")]
    assert f"({minutes[0]:.1f} and {minutes[1]:.1f} minutes of training)" in guide
    report = json.loads((records / "timm_resnet18_fsr_at_cifar10_cpu.robustness_adaptive.json").read_text())
    shown = ("natural", "pgd20", "apgd_ce", "mask_surrogate", "mask_surrogate_apgd", "feature_space")
    shown += ("transfer_twin", "transfer_without_rec", "adaptive_ensemble")
    row = " | ".join(f"{100 * report['accuracy'][k]:.2f}" for k in shown)
    assert (
        f"| FSR in timm's ResNet-18, 4 epochs | {row} |" in guide and f"first {report['images']} test images" in guide
    )


def test_the_full_scale_runs_figures_in_the_convergence_guide_are_those_of_its_log():
    """docs/convergence.md's account of the full-scale run, read from the curves its train.log gave
    (docs/convergence/gpu_b128_30ep/) and from the saved model's health (hub/weights/)."""
    guide = plain_text(ROOT / "docs" / "convergence.md")
    log = ROOT / "docs/convergence/gpu_b128_30ep/gpu_b128_30ep.resnet18_fsr.jsonl"
    epochs = [json.loads(line) for line in log.read_text().splitlines()][1:]
    live = [m["fsr4/r_live_2"] for m in epochs]
    assert (
        f"{100 * live[0]:.0f} % live after epoch 1, then between {100 * min(live[1:]):.0f} % and "
        f"{100 * max(live[1:]):.0f} % for {len(epochs)} epochs"
    ) in guide
    r = [m["fsr4/r_contribution"] for m in epochs]
    at_first_lr = [v for m, v in zip(epochs[1:], r[1:]) if m["lr"] == epochs[0]["lr"]]
    after_drop = [v for m, v in zip(epochs, r) if m["lr"] < epochs[0]["lr"]]
    assert (
        f"rose from {r[0]:.2f} after epoch 1 to {min(at_first_lr):.2f}-{max(at_first_lr):.2f} over the epochs at lr "
        f"{epochs[0]['lr']:g} and to {min(after_drop):.2f}-{max(after_drop):.2f} after the first lr drop"
    ) in guide
    second_half = [m["fsr4/mask_mean"] for m in epochs[len(epochs) // 2 :]]
    assert f"mask settled at a mean of {min(second_half):.2f}-{max(second_half):.2f}" in guide
    saved = json.loads((ROOT / "hub/weights/resnet18_fsr.at_cifar10/metrics.json").read_text())["fsr_health"]["fsr4"]
    assert f"({100 * saved['mask_above_0.99']:.0f} % above 0.99, {100 * saved['mask_below_0.01']:.0f} % below 0.01" in (
        guide
    )
    first, last = epochs[0], epochs[-1]
    assert (
        f"fell from {first['loss_fsr']:.1f} after the first epoch to {last['loss_fsr']:.1f} after the last, the "
        f"classification loss from {first['loss_cls']:.2f} to {last['loss_cls']:.2f}"
    ) in guide


def test_the_gpu_training_speeds_in_the_benchmarks_are_those_of_the_zoos_logs():
    """docs/benchmarks.md's GPU training speeds, read from the trained models' train.log (each epoch's line)."""
    docs = plain_text(ROOT / "docs" / "benchmarks.md")
    for name in ("resnet18_plain.at_cifar10", "resnet18_fsr.at_cifar10"):
        lines = (ROOT / "hub" / "weights" / name / "train.log").read_text().splitlines()
        epochs = [dict(zip(w[::2], w[1::2])) for w in (line.split() for line in lines if line.startswith("epoch "))]
        epochs = [e for e in epochs if "images_per_s" in e]
        speeds = [float(e["images_per_s"]) for e in epochs[1:]]  # after the first epoch (compilation, warm-up)
        median = statistics.median(float(e["seconds"]) for e in epochs[1:])
        assert f"{min(speeds):.0f}-{max(speeds):.0f} images/s" in docs, name
        assert f"(median {median:.2f} s per" in docs, name
        assert name.startswith("resnet18_plain") or f"{float(epochs[0]['seconds']):g} s for its first epoch" in docs
    first = json.loads((ROOT / "hub/weights/resnet18_fsr.at_cifar10/metrics.json").read_text())["train_config"]
    assert first["compile"] == "reduce-overhead" and first["batch_size"] == 128


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


def test_the_defenses_guide_quotes_table4_and_the_networks_sizes():
    """docs/defenses.md: the gaps between PGD-100 and AutoAttack it quotes are Table 4's, and each network's
    parameter count in its table is the registered network's."""
    from fsr_models.facts.paper import TABLE4, TABLE4_ATTACKS

    guide = plain_text(ROOT / "docs" / "defenses.md")
    pgd100, autoattack = TABLE4_ATTACKS.index("pgd100"), TABLE4_ATTACKS.index("autoattack")
    gap = {name: f"{row[pgd100] - row[autoattack]:.1f}" for name, row in TABLE4.items()}
    said = f"{gap['resnet18_cas']} points for CAS and {gap['resnet18_cifs']} for CIFS against {gap['resnet18_plain']}"
    assert said in guide
    rows = [line for line in (ROOT / "docs" / "defenses.md").read_text().splitlines() if line.startswith("| `")]
    for name in TABLE4:
        count = sum(p.numel() for p in timm.create_model(name, device="meta").parameters())
        (row,) = [r for r in rows if r.startswith(f"| `{name}` |")]
        assert f"| {count:,}" in row, name


def test_the_defenses_guides_demo_table_is_that_of_its_reports():
    """docs/defenses.md's table of the mask attacks on the demo CAS and CIFS networks, read from the reports kept in
    docs/defenses/demo/, and the accuracy at eps 128/255 it quotes from their curves."""
    guide, records = (ROOT / "docs" / "defenses.md").read_text(), ROOT / "docs" / "defenses" / "demo"
    for defense in ("cas", "cifs"):
        report = json.loads((records / f"resnet18_{defense}.robustness_adaptive.json").read_text())
        accuracy, candidates = report["accuracy"], report["candidates"]["defense_masks"]
        pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
        cells = [pct(accuracy[k]) for k in ("natural", "pgd20", "apgd_ce", "feature_space")]
        masks = ["joint loss", "masks of the true class", "masks of the likeliest wrong class"]
        cells += [pct(candidates[k]) for k in [*masks, "heads first, then cross-entropy"]]
        cells += [pct(candidates["through the relevance map"]) if defense == "cifs" else "-"]
        cells += [pct(accuracy["defense_masks"]), pct(accuracy["adaptive_ensemble"])]
        assert f"| {defense.upper()}, demo recipe | {' | '.join(cells)} |" in guide, defense
        assert report["images"] == 200 and report["verdict"].startswith("unreliable")
        assert f"{defense.upper()} {100 * report['curve']['accuracy'][-1]:.1f} %" in " ".join(guide.split())


ADAPTIVE_COLUMNS = [
    "natural",
    "pgd20",
    "feature_space",
    "transfer_twin",
    "mask_surrogate",
    "mask_surrogate_apgd",
    "transfer_without_rec",
    "defense_masks",
    "adaptive_ensemble",
]


def test_the_defenses_guides_cpu_comparison_is_that_of_its_study_and_reports():
    """docs/defenses.md's CPU comparison: the study's table as training/study.py wrote it (docs/defenses/cpu/), and
    each adaptive evaluation's row (accuracy in % with "-" for an attack that does not apply, the accuracy at eps
    128/255 and the verdict) from the report kept beside it."""
    guide, records = (ROOT / "docs" / "defenses.md").read_text(), ROOT / "docs" / "defenses" / "cpu"
    assert (records / "table.md").read_text().strip() in guide
    reports = sorted(records.glob("*.robustness_adaptive.json"))
    assert [p.name.split(".")[0] for p in reports] == [f"resnet18_{n}" for n in ("cas", "cifs", "fd", "fsr", "plain")]
    for path in reports:
        report = json.loads(path.read_text())
        accuracy = report["accuracy"]
        cells = [f"{100 * accuracy[k]:.0f}" if k in accuracy else "-" for k in ADAPTIVE_COLUMNS]
        cells += [f"{100 * report['curve']['accuracy'][-1]:.0f}", report["verdict"].split(":")[0]]
        assert f"| `{report['model']}` | {report['images']} | {' | '.join(cells)} |" in guide, path.name
