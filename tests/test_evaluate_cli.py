"""The evaluation command as a new user meets it: every mistyped value or missing input is one line `error: ...`
and exit code 2 before any attack runs; what did run says which data it used."""

import json
import re

import huggingface_hub.constants
import pytest
import timm

from fsr_models import evaluate
from fsr_models.hub.folders import save_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small untrained plain ResNet-18 in the zoo layout: enough to run the command."""
    path = tmp_path_factory.mktemp("plain") / "model"
    save_folder(timm.create_model("resnet18_plain", widths=[8, 16, 32, 64]), path)
    return path


def run(*argv):
    return evaluate.main([str(a) for a in argv])


def user_error(capsys, *argv) -> str:
    """The one line a user error prints (exit code 2, nothing on stdout)."""
    with pytest.raises(SystemExit) as exit_:
        run(*argv)
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and not out and err.count("\n") == 1 and err.startswith("error: "), (out, err)
    return err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--eps", "8"],
            "argument --eps: 8 is outside [0, 1]: eps is in pixel units, and pixels are in [0, 1] "
            "(did you mean 8/255?)",
        ),
        (["--eps", "2040/255"], "argument --eps: 2040/255 is outside [0, 1]"),
        (["--eps", "eight"], "argument --eps: 'eight' is not a number or a fraction such as 8/255"),
        (["--n", "0"], "argument --n: 0 is below 1: give a whole number >= 1"),
        (["--n", "-5"], "argument --n: -5 is below 1"),
        (["--n", "1.5"], "argument --n: '1.5' is not a whole number"),
        (["--batch-size", "0"], "argument --batch-size: 0 is below 1"),
        (["--n", "600"], "--n 600: only 512 cifar10 test images in sample (shipped first 512 CIFAR-10 test images)"),
        (["--attacks", "ti_fgsm"], "ti_fgsm and di_fgsm are transfer attacks: give --source"),
    ],
)
def test_bad_values_are_one_line_errors_that_name_them(folder, tmp_path, capsys, argv, message):
    err = user_error(capsys, folder, "--data-dir", "sample", *argv, "--out", tmp_path / "eval")
    assert message in err
    assert not (tmp_path / "eval").exists()


def test_eps_as_a_fraction_is_the_paper_protocol_and_the_report_says_which_images(folder, tmp_path):
    sample = ["--data-dir", "sample", "--n", "4", "--out", tmp_path]
    assert run(folder, *sample, "--eps", "8/255", "--attacks", "natural", "fgsm") == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["eps"] == 8 / 255 and report["settings"]["fgsm"]["step_size"] == 8 / 255
    assert report["data_source"] == "sample (shipped first 512 CIFAR-10 test images)" and report["indices"] == "0:4"
    assert report["images"] == 4 and "fsr_health" not in report  # a network without FSR
    assert (
        "on the first 4 CIFAR-10 test images (the sample shipped with fsr-zoo), eps 8/255 (L-inf), paper protocol;"
    ) in (tmp_path / "report.md").read_text()
    assert run(folder, *sample, "--eps", "4/255", "--attacks", "natural", "--overwrite") == 0
    assert "eps 4/255 (L-inf), the paper's attacks at another eps" in (tmp_path / "report.md").read_text()


def test_a_data_folder_is_recorded_as_the_source(folder, tmp_path, cifar10_dir):
    assert run(folder, "--data-dir", cifar10_dir, "--n", "600", "--attacks", "natural", "--out", tmp_path) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["data_source"], report["indices"], report["images"]) == (
        "CIFAR-10 test images of a local data folder",
        "0:600",
        600,
    )  # no machine path in a report others read


def test_missing_data_is_an_error_and_nothing_is_created_or_downloaded(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FSR_DATA_DIR", raising=False)
    err = user_error(capsys, folder, "--n", "4", "--out", tmp_path / "eval")  # no silent fallback to the sample
    assert "no data folder: give a folder for cifar10 test" in err and "--data-dir DIR" in err and "'sample'" in err
    missing = tmp_path / "cifar10"
    err = user_error(capsys, folder, "--data-dir", missing, "--n", "4", "--out", tmp_path / "eval")
    assert f"data folder {missing} does not exist" in err and "test.npz" in err and "--download" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    err = user_error(capsys, folder, "--data-dir", empty, "--n", "4", "--out", tmp_path / "eval")
    assert "cifar10 test is not in" in err and "was not asked to be downloaded" in err
    assert not missing.exists() and not any(empty.iterdir()) and not (tmp_path / "eval").exists()


def test_models_given_as_local_dir_and_names_that_cannot_load(folder, tmp_path, capsys, monkeypatch):
    assert (
        run(f"local-dir:{folder}", "--data-dir", "sample", "--n", "2", "--attacks", "natural", "--out", tmp_path) == 0
    )
    assert json.loads((tmp_path / "report.json").read_text())["model"] == "resnet18_plain.at_cifar10"  # no path
    assert f"local-dir:{folder}" in capsys.readouterr().out
    err = user_error(capsys, f"local-dir:{tmp_path / 'nope'}", "--data-dir", "sample")
    assert f"{tmp_path / 'nope'} is not a folder" in err
    assert "Unknown model (resnet_nope)" in user_error(capsys, "resnet_nope", "--data-dir", "sample")
    # A plain timm name whose weights are not cached, offline: no download attempt, no traceback.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    err = user_error(capsys, "resnet18", "--data-dir", "sample")
    assert "resnet18: its pretrained weights are not in the local cache and the Hub cannot be reached" in err
    assert "is not in the local cache" in user_error(capsys, "hf-hub:fsr-zoo/nope", "--data-dir", "sample")


def test_the_command_says_where_it_writes_keeps_earlier_reports_and_shows_its_defaults(folder, tmp_path, capsys):
    out = tmp_path / "eval"
    assert run(folder, "--data-dir", "sample", "--n", "2", "--attacks", "natural", "--curve", "--out", out) == 0
    printed = capsys.readouterr().out
    assert f"the report goes to {out}/" in printed and f"wrote {out / 'report.json'}" in printed
    assert (out / "robustness_curve.png").is_file()
    err = user_error(capsys, folder, "--data-dir", "sample", "--n", "2", "--attacks", "natural", "--out", out)
    assert "holds the report of an earlier evaluation" in err and "--overwrite" in err
    assert run(folder, "--data-dir", "sample", "--n", "2", "--attacks", "natural", "--out", out, "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]  # no stale curve of the first run
    with pytest.raises(SystemExit):
        run("--help")
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(default: 1000)" in help_text and "(default: eval)" in help_text and "'autoattack']" in help_text


def test_a_tag_whose_weights_cannot_be_had_names_the_folder_that_works(capsys):
    err = user_error(capsys, "resnet18_plain.at_cifar10", "--data-dir", "sample", "--n", "2")
    assert err.startswith("error: resnet18_plain.at_cifar10 has no pretrained weights in the local cache")
    assert err.rstrip().endswith(
        "; or give MODEL as the folder of trained weights (a checkout of fsr-zoo holds them in "
        "hub/weights/<architecture>.<tag>)"
    )
    assert "timm.create_model" not in err  # the command's words


def test_an_earlier_report_in_out_does_not_hide_a_wrong_input(folder, tmp_path, capsys):
    """The inputs are checked first: a mistyped model folder or data folder is named even where --out holds the
    report of an earlier evaluation (which, with right inputs, is then the one error)."""
    out = tmp_path / "eval"
    assert run(folder, "--data-dir", "sample", "--n", "2", "--attacks", "natural", "--out", out) == 0
    capsys.readouterr()
    assert "no-such-model" in user_error(capsys, tmp_path / "no-such-model", "--data-dir", "sample", "--out", out)
    assert "nowhere" in user_error(capsys, folder, "--data-dir", tmp_path / "nowhere", "--n", "2", "--out", out)
    earlier = user_error(capsys, folder, "--data-dir", "sample", "--n", "2", "--out", out)
    assert "holds the report of an earlier evaluation" in earlier


def test_the_report_names_its_images_and_gives_check_figures_in_percent(folder, tmp_path):
    assert run(
        folder, "--data-dir", "sample", "--n", "4", "--attacks", "natural", "pgd20", "--sanity", "--out", tmp_path
    ) in (0, 4)
    text = (tmp_path / "report.md").read_text()
    assert "on the first 4 CIFAR-10 test images (the sample shipped with fsr-zoo)" in text
    assert "an image counts as robust only if it is also classified correctly clean" in text
    checks = [line for line in text.splitlines() if line.startswith(("- PASS", "- FAIL"))]
    assert checks and not any(re.search(r"\d\.\d{5,}", line) for line in checks)  # no raw floats
    assert any(re.search(r"pgd20 \d+\.\d\d%", line) for line in checks)
