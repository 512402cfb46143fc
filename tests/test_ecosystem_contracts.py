"""The contracts with timm and transformers that users of the zoo rely on, checked against the newest releases that
pyproject.toml allows (`make test`) and the oldest (`make test-oldest`, which runs this file alone):

- transformers' image-classification pipeline and AutoImageProcessor on a zoo folder: the preprocessing the network
  was trained with (resize to the input size, x / 255, no normalisation) and the network's own predictions;
- a folder written by timm itself (`save_for_hf`) loads through timm's `local-dir:`, and a repository pushed by timm
  (`push_to_hf_hub`) through `hf-hub:`, with the same logits;
- transformers' `save_pretrained` -> `from_pretrained`;
- a downloaded copy of a published repository loads its model and image processor without the package.
"""

import json
import logging
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
from conftest import SHIPPED_PLAIN as PLAIN
from conftest import SMALL_RESNET, trained_looking
from hub_server import free_port, git, run_client, serving
from huggingface_hub import HfApi
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from fsr_models.data import SAMPLES
from fsr_models.hf import FSRConfig, FSRForImageClassification, image_processor
from fsr_models.hub.folders import IMAGE_PROCESSOR_NAME, load_model, save_folder
from fsr_models.hub.repository import AUTO_MAP, remote_model_class, write_remote_code


@pytest.fixture(scope="module")
def real_images():
    """The first 50 real CIFAR-10 test images (uint8 HWC, from the shipped sample) and their labels."""
    with np.load(SAMPLES["test"]) as arrays:
        return arrays["x"][:50], arrays["y"][:50].astype(int)


def own_predictions(folder: Path, x: np.ndarray) -> list[str]:
    """The label names the network of a zoo folder predicts for uint8 HWC images, preprocessed as in training."""
    model = load_model(folder).eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)
    return [model.pretrained_cfg["label_names"][i] for i in logits.argmax(1)]


# --- transformers' pipeline and image processor ------------------------------------------------------------------


def test_pipeline_predicts_what_the_network_predicts_on_real_images(real_images, caplog):
    x, y = real_images
    logging.Logger.warning_once.cache_clear()  # transformers warns once per process: let this pipeline warn again
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # neither pixels out of range nor images of another size
        classify = pipeline("image-classification", model=str(PLAIN))
        top = [result[0]["label"] for result in classify([Image.fromarray(a) for a in x], top_k=1)]
    assert "backend is not available" not in caplog.text  # the processor of the backend it asks for is registered
    assert top == own_predictions(PLAIN, x)
    names = json.loads((PLAIN / "config.json").read_text())["label_names"]
    assert sum(label == names[i] for label, i in zip(top, y)) >= 30  # 60% of 50; the weights reach 79.5% on 1,000


@pytest.mark.parametrize("backend", [None, "pil"])
def test_image_processor_gives_the_pixels_the_network_was_trained_on(real_images, backend):
    x, _ = real_images
    processor = AutoImageProcessor.from_pretrained(PLAIN, **({"backend": backend} if backend else {}))
    assert type(processor).__module__.startswith("transformers.")  # transformers' own class, configured by the folder
    assert (processor.size["height"], processor.size["width"]) == (32, 32)
    pixels = processor([Image.fromarray(a) for a in x], return_tensors="pt")["pixel_values"]
    expected = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    # x * (1/255) in float32, as the processor rescales, is x / 255 to within one rounding step (2**-24 below 1)
    torch.testing.assert_close(pixels, expected, rtol=0, atol=2**-24)


def test_processor_follows_the_input_size_of_the_tag(tmp_path):
    tiny = timm.create_model("resnet18_fsr.at_tiny_imagenet", widths=[8, 16, 32, 64])
    processor = image_processor(FSRConfig.from_timm_model(tiny))
    assert processor.size == {"height": 64, "width": 64} and not processor.do_normalize
    image = Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8))
    assert processor(image, return_tensors="pt")["pixel_values"].shape == (1, 3, 64, 64)
    save_folder(tiny, tmp_path)  # every saved folder carries its processor, and the Auto class reads it back
    assert json.loads((tmp_path / IMAGE_PROCESSOR_NAME).read_text())["size"] == {"height": 64, "width": 64}
    assert AutoImageProcessor.from_pretrained(tmp_path).size["height"] == 64


@pytest.mark.parametrize("code", ["package", "trust_remote_code"])
def test_images_of_another_size_than_the_networks_get_one_warning_line(code, tmp_path):
    model_class = FSRForImageClassification
    if code == "trust_remote_code":  # the class a repository's code defines, as transformers loads it
        write_remote_code(tmp_path)
        model_class = remote_model_class(tmp_path)
    model = model_class.from_pretrained(PLAIN).eval()
    with pytest.warns(UserWarning) as record:
        model(pixel_values=torch.rand(1, 3, 224, 224))
    messages = [str(w.message) for w in record if "pixel_values" in str(w.message)]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "expected pixel_values of 32x32 pixels" in messages[0] and "got 224x224" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model(pixel_values=torch.rand(1, 3, 32, 32))


# --- folders and repositories written by timm itself --------------------------------------------------------------


@pytest.mark.parametrize(
    "name, args, safe",
    [
        ("resnet18_fsr", dict(SMALL_RESNET, fsr_tau=0.2), True),
        ("resnet18_fsr", SMALL_RESNET, False),  # save_for_hf's default: pickled weights, which timm itself reads
        ("vgg16_plain.at_cifar100", dict(stages=[[8, 1], [16, 1], [32, 1], [32, 1], [32, 1]]), True),
        ("wrn34_10_fsr", dict(depth=10, widen_factor=1, fsr_stages=[2, 3]), True),
    ],
)
def test_a_folder_timm_saved_loads_through_timm_local_dir(tmp_path, name, args, safe):
    torch.manual_seed(0)
    model = trained_looking(timm.create_model(name, **args))
    timm.models.save_for_hf(model, tmp_path, safe_serialization=safe)
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        if safe:  # the zoo's own loader reads safetensors only
            assert torch.equal(load_model(tmp_path).eval()(x), model(x))
    assert loaded.num_classes == model.num_classes and loaded.fsr_stages == model.fsr_stages
    assert list(loaded.pretrained_cfg["label_names"]) == list(model.pretrained_cfg["label_names"])


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda c: c["model_args"].update(fsr_tau=-1), "fsr_tau must be positive"),
        (lambda c: c.update(fsr_taus=0.2), "unknown FSRConfig field(s) ['fsr_taus']"),  # a misspelt zoo field
        (lambda c: c["model_args"].update(fsr_stages=[7]), "fsr_stages of resnet18 must be in 1..4"),
        (lambda c: c.update(num_classes=11), "num_classes 11 disagrees with model_args"),
    ],
)
def test_a_timm_folder_that_is_wrong_is_refused_in_one_line(tmp_path, change, named):
    timm.models.save_for_hf(timm.create_model("resnet18_fsr", **SMALL_RESNET), tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    change(config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    for load in (lambda: timm.create_model(f"local-dir:{tmp_path}", pretrained=True), lambda: load_model(tmp_path)):
        with pytest.raises(ValueError) as error:
            load()
        assert named in str(error.value) and str(tmp_path / "config.json") in str(error.value)
        assert "\n" not in str(error.value)


def test_a_repository_timm_pushed_loads_through_timm_hf_hub(tmp_path, monkeypatch):
    """timm's push_to_hf_hub, its upload recorded into a git repository that a real Hub API (olah) then serves."""
    repo_id = "someone/resnet18_fsr-pushed-by-timm"
    repo = tmp_path / "mirrors" / "models" / repo_id
    torch.manual_seed(0)
    model = trained_looking(timm.create_model("resnet18_fsr", **SMALL_RESNET, fsr_tau=0.2))

    def upload_folder(self, repo_id, folder_path, **kwargs):
        shutil.copytree(folder_path, repo)
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", ".")
        return git(repo, "commit", "-qm", "Add model")

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: SimpleNamespace(repo_id=repo_id))
    monkeypatch.setattr(HfApi, "file_exists", lambda self, **kwargs: False)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    timm.models.push_to_hf_hub(model, repo_id)
    assert {"config.json", "model.safetensors"} <= {p.name for p in repo.iterdir()}
    with serving(tmp_path / "mirrors", tmp_path, repo_id) as endpoint:
        served = run_client(
            endpoint,
            tmp_path / "hf-home",
            f"""
            import json, timm, torch
            import fsr_models
            from fsr_models.hub.folders import load_model
            torch.manual_seed(0)
            x = torch.rand(2, 3, 32, 32)
            with torch.no_grad():
                by_timm = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()(x)
                by_load_model = load_model("hf-hub:{repo_id}").eval()(x)
            print(json.dumps({{"timm": by_timm.tolist(), "load_model": by_load_model.tolist()}}))
            """,
        )
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
    assert torch.equal(torch.tensor(served["timm"]), reference)
    assert torch.equal(torch.tensor(served["load_model"]), reference)


# --- transformers' own round trip, and a repository's own code -----------------------------------------------------


def test_transformers_save_pretrained_loads_back_with_from_pretrained(tmp_path):
    torch.manual_seed(0)
    config = FSRConfig(backbone="resnet18", backbone_args=SMALL_RESNET, fsr_tau=0.3, num_labels=7)
    model = FSRForImageClassification(config)
    trained_looking(model.model)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=x).logits, model(pixel_values=x).logits)
    assert type(loaded) is FSRForImageClassification and loaded.config.fsr_tau == 0.3
    assert AutoImageProcessor.from_pretrained(tmp_path).size["height"] == 32


def test_a_downloaded_repository_loads_its_processor_and_model_without_the_package(tmp_path, real_images):
    """A published repository copied to disk (its config.json with auto_map, weights, preprocessor config and code),
    loaded where neither fsr_models nor timm can be imported: transformers reads a local folder's processor from
    config.json, which the repository's own processor class understands."""
    folder = tmp_path / "repository"
    folder.mkdir()
    for name in ("model.safetensors", IMAGE_PROCESSOR_NAME):
        shutil.copyfile(PLAIN / name, folder / name)
    write_remote_code(folder)
    config = {**json.loads((PLAIN / "config.json").read_text()), "auto_map": AUTO_MAP}
    (folder / "config.json").write_text(json.dumps(config))
    x, _ = real_images
    np.save(tmp_path / "images.npy", x[:20])
    served = run_client(
        f"http://127.0.0.1:{free_port()}",  # nobody listens: everything comes from the folder
        tmp_path / "hf-home",
        f"""
        import sys
        sys.modules["fsr_models"] = sys.modules["timm"] = None  # an import of either fails
        import json, numpy as np
        from PIL import Image
        from transformers import AutoImageProcessor, pipeline
        processor = AutoImageProcessor.from_pretrained("{folder}", trust_remote_code=True)
        classify = pipeline("image-classification", model="{folder}", trust_remote_code=True)
        images = [Image.fromarray(a) for a in np.load("{tmp_path / "images.npy"}")]
        print(json.dumps({{"size": [processor.size["height"], processor.size["width"]],
                          "labels": [r[0]["label"] for r in classify(images, top_k=1)]}}))
        """,
        offline=True,
    )
    assert served["size"] == [32, 32]
    assert served["labels"] == own_predictions(PLAIN, x[:20])


# --- configs across transformers releases --------------------------------------------------------------------------

# config.json as each release's save_pretrained wrote it (tests/data/configs/write.py)
CONFIGS_BY_RELEASE = Path(__file__).parent / "data" / "configs"


def saved_config(folder: Path) -> dict:
    torch.manual_seed(0)
    FSRForImageClassification(FSRConfig(backbone_args=SMALL_RESNET, num_labels=10)).save_pretrained(folder)
    return json.loads((folder / "config.json").read_text())


@pytest.mark.parametrize("written_by", sorted(p.stem for p in CONFIGS_BY_RELEASE.glob("*.json")))
def test_a_config_another_transformers_release_wrote_loads_here(tmp_path, written_by):
    """config.json files that the oldest and the newest allowed transformers wrote (committed; the keys each adds of
    its own, such as tie_word_embeddings) load in this release with every loader, and build the same network."""
    config = json.loads((CONFIGS_BY_RELEASE / f"{written_by}.json").read_text())
    here = saved_config(tmp_path / "here")
    shutil.copyfile(tmp_path / "here" / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(config))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = load_model(tmp_path / "here").eval()(x)
        assert torch.equal(load_model(tmp_path).eval()(x), expected)
        assert torch.equal(AutoModelForImageClassification.from_pretrained(tmp_path)(x).logits, expected)
        assert torch.equal(timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()(x), expected)
    assert {k: v for k, v in config.items() if k in ("backbone", "fsr_stages", "model_args")} == {
        k: v for k, v in here.items() if k in ("backbone", "fsr_stages", "model_args")
    }


def test_the_committed_config_of_this_release_is_what_it_writes(tmp_path):
    """The fixture of this environment's transformers release (when it has one) is what its save_pretrained writes,
    so the files above are real; `python tests/data/configs/write.py` adds the running release's."""
    import transformers

    fixture = CONFIGS_BY_RELEASE / f"transformers-{transformers.__version__}.json"
    if not fixture.is_file():
        pytest.skip(f"no committed config of transformers {transformers.__version__}")
    assert saved_config(tmp_path) == json.loads(fixture.read_text())


def test_keys_the_zoo_does_not_own_are_kept_and_a_misspelt_zoo_field_is_refused(tmp_path, caplog):
    saved_config(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    standard = {"tie_word_embeddings": True, "use_cache": False, "chunk_size_feed_forward": 0}
    (tmp_path / "config.json").write_text(json.dumps({**config, **standard}))
    logging.Logger.warning_once.cache_clear()
    with caplog.at_level(logging.WARNING):
        assert FSRConfig.from_pretrained(tmp_path).tie_word_embeddings is True
        load_model(tmp_path)
    assert "FSRConfig" not in caplog.text  # transformers' own keys: no warning
    (tmp_path / "config.json").write_text(json.dumps({**config, "colour": "red", "written_by": "a tool"}))
    with caplog.at_level(logging.WARNING):
        assert FSRConfig.from_pretrained(tmp_path).colour == "red"
        FSRConfig.from_pretrained(tmp_path)
    assert caplog.text.count("config key(s) ['colour', 'written_by'] are neither the zoo's") == 1  # once
    for misspelt in ({"fsr_tua": 0.2}, {"backbon": "vgg16"}, {"lamda_sep": 1.0}, {"normalize_means": [0.5]}):
        (tmp_path / "config.json").write_text(json.dumps({**config, **misspelt}))
        with pytest.raises(ValueError, match=rf"unknown FSRConfig field\(s\) \['{next(iter(misspelt))}'\]"):
            load_model(tmp_path)


def test_importing_the_package_changes_no_table_of_transformers(tmp_path):
    """Registration adds the zoo's names (model type "fsr", its classes) and leaves every entry transformers has as
    it was: its checkpoint conversion mappings and Auto mappings, compared before and after the import."""
    script = """
import json, transformers
from transformers import conversion_mapping as cm
from transformers.models.auto import configuration_auto, modeling_auto
def tables():
    mappings = cm._checkpoint_conversion_mapping_cache or cm._build_checkpoint_conversion_mapping()
    return {"conversion": sorted(repr((k, v)) for k, v in mappings.items()),
            "configs": sorted(configuration_auto.CONFIG_MAPPING_NAMES.items()),
            "classifiers": sorted(modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.items())}
before = tables()
import fsr_models
after = tables()
print(json.dumps({k: [e for e in after[k] if e not in before[k]] for k in before}))
print(json.dumps({k: [e for e in before[k] if e not in after[k]] for k in before}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    added, removed = map(json.loads, result.stdout.strip().splitlines()[-2:])
    assert removed == {"conversion": [], "configs": [], "classifiers": []}
    assert all("fsr" in entry.lower() for entries in added.values() for entry in entries), added


def test_a_zoo_folder_never_resolves_to_transformers_timm_wrapper(tmp_path):
    """transformers' TimmWrapperForImageClassification loads folders of timm's own layout (no model_type). A zoo
    folder resolves to the zoo's class, with its weights; a folder timm itself wrote for a zoo network resolves to
    the wrapper, with the same weights, or (transformers 5.6) fails in one error: never random weights."""
    torch.manual_seed(0)
    model = trained_looking(timm.create_model("resnet18_fsr", **SMALL_RESNET)).eval()
    save_folder(model, tmp_path / "zoo")
    timm.models.save_for_hf(model, tmp_path / "timm", safe_serialization=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        zoo = AutoModelForImageClassification.from_pretrained(tmp_path / "zoo").eval()
        assert type(zoo).__name__ == "FSRForImageClassification" and torch.equal(zoo(x).logits, model(x))
        try:
            wrapped = AutoModelForImageClassification.from_pretrained(tmp_path / "timm").eval()
        except TypeError as e:  # older releases' wrapper passes num_classes twice (timm's model_args hold it): loud
            assert "multiple values for keyword argument 'num_classes'" in str(e)
        else:
            assert type(wrapped).__name__ == "TimmWrapperForImageClassification"
            torch.testing.assert_close(wrapped(x).logits, model(x), rtol=1e-5, atol=1e-6)
