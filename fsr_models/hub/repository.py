"""Hub repositories of the zoo: turn a trained model into a repository folder, check it, and upload it.

A repository folder holds `config.json` (loads in timm and transformers), `model.safetensors`,
`preprocessor_config.json` (the image processor of transformers' pipelines), `metrics.json` (what was measured),
`train_config.yaml` (when the run recorded one), `README.md`, the model card generated from these files, and
`configuration_fsr.py` + `modeling_fsr.py` + `image_processing_fsr.py`, the code that `config.json`'s `auto_map`
names, with `fsr_core.py` and the defenses' `cas.py`, `cifs.py`, `fd.py`, the package's own torch-only modules that
they import, so that transformers loads the model with `trust_remote_code=True` where this package is not
installed; and, when the source has them, `fsr_heads.safetensors` (the trained auxiliary heads, for fine-tuning),
`robustness.json` and `robustness_curve.png` (a robustness evaluation and its plot), and `comparison.json` (the
record of the zoo model the card compares against). The weights are one `model.safetensors` file: timm's Hub
loader reads only that name, and the zoo's largest network (WRN-34-10 + FSR, 191 MB) is far below the Hub's
per-file limit. `publish` checks the folder and sends nothing when a check fails. The command line is
`hub/publish.py`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
import yaml
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard, constants, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from fsr_models import defenses
from fsr_models.facts.networks import twin_name
from fsr_models.fsr import FSRLoss, fsr_core
from fsr_models.hf import FSRForImageClassification, remote
from fsr_models.hf.configuration_fsr import ATTACHED
from fsr_models.hub.card import model_card
from fsr_models.hub.folders import (
    CONFIG_NAME,
    FSR_HEADS_NAME,
    IMAGE_PROCESSOR_NAME,
    WEIGHTS_NAME,
    image_processor_config,
    load_model,
    read_fsr_heads,
    read_weights,
)
from fsr_models.hub.naming import default_repo_id, deviations
from fsr_models.hub.records import (
    ADAPTIVE_NAME,
    COMPARISON_NAME,
    CURVE_NAME,
    FIGURE_NAME,
    METRICS_NAME,
    ROBUSTNESS_NAME,
    Record,
    read_record,
)
from fsr_models.hub.weight_files import save_weights
from fsr_models.training.config import portable_config

TRAIN_CONFIG_NAME, CARD_NAME = "train_config.yaml", "README.md"
# The code for trust_remote_code=True: each file of a repository and its source, copied verbatim. fsr_core.py and
# the defenses' modules, which the files of fsr_models/hf/remote import relatively, are the package's own (torch
# only): the two compute with the same code.
REMOTE_CODE_DIR, DEFENSES_DIR = Path(remote.__file__).parent, Path(defenses.__file__).parent
REMOTE_CODE_SOURCES = {
    "configuration_fsr.py": REMOTE_CODE_DIR / "configuration_fsr.py",
    "modeling_fsr.py": REMOTE_CODE_DIR / "modeling_fsr.py",
    "image_processing_fsr.py": REMOTE_CODE_DIR / "image_processing_fsr.py",
    "fsr_core.py": Path(fsr_core.__file__),
    **{name: DEFENSES_DIR / name for name in ("cas.py", "cifs.py", "fd.py")},
}
REMOTE_CODE_FILES = tuple(REMOTE_CODE_SOURCES)
# Its classes, as transformers' register_for_auto_class would map them in config.json
AUTO_MAP = {
    "AutoConfig": "configuration_fsr.FSRConfig",
    "AutoModelForImageClassification": "modeling_fsr.FSRForImageClassification",
    # [PIL backend, torchvision backend], as transformers lists a pair of processors
    "AutoImageProcessor": ["image_processing_fsr.FSRImageProcessorPil", "image_processing_fsr.FSRImageProcessor"],
}
REQUIRED_FILES = (CONFIG_NAME, WEIGHTS_NAME, IMAGE_PROCESSOR_NAME, METRICS_NAME, CARD_NAME, *REMOTE_CODE_FILES)
# Copied from the source when it has them (train_config.yaml: written when metrics.json records the config).
OPTIONAL_FILES = (
    TRAIN_CONFIG_NAME,
    FSR_HEADS_NAME,
    ROBUSTNESS_NAME,
    ADAPTIVE_NAME,
    CURVE_NAME,
    FIGURE_NAME,
    COMPARISON_NAME,
)
REPO_FILES = REQUIRED_FILES + OPTIONAL_FILES


class PublishError(ValueError):
    """A repository folder that must not be published as it is; the message says what to fix."""


def source_folder(source: str | Path) -> Path:
    """The zoo folder (config.json + weights) of a training run folder (its model/) or of a zoo folder itself."""
    path = Path(source)
    for candidate in (path, path / "model"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    raise FileNotFoundError(
        f"{source} holds no {CONFIG_NAME}: give a training run folder (with model/) or a zoo "
        f"folder ({CONFIG_NAME} + {WEIGHTS_NAME})"
    )


def check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
        if repo_id.count("/") != 1:
            raise HFValidationError("it must name an owner")
    except HFValidationError as e:
        raise PublishError(f"{repo_id!r} is not a Hub model id of the form owner/name ({e})") from e


def is_repo_folder(path: str | Path) -> bool:
    """An exported repository folder: its files, and a README.md that is a model card naming its repository (a zoo
    folder such as hub/weights/<name> has the files too, but a README that is no card)."""
    path = Path(path)
    if not all((path / n).is_file() for n in REQUIRED_FILES):
        return False
    return ModelCard.load(path / CARD_NAME).data.model_name is not None


def zoo_counterpart(this: Record, zoo: str | Path | None) -> dict | None:
    """The comparison a card carries: the record of the zoo folder that holds the same network with FSR (for a
    plain one) or without it (for an FSR one), same tag, when both runs are in the paper's setting of that tag."""
    if zoo is None or deviations(this):
        return None
    other = twin_name(this.name)
    folder = Path(zoo) / str(other)
    if other is None or not (folder / METRICS_NAME).is_file():
        return None
    record = read_record(folder)
    if deviations(record):
        return None
    reports = {"robustness": record.robustness, "adaptive": record.adaptive}
    return {"model": other, "metrics": record.metrics} | {k: v for k, v in reports.items() if v}


def export_repo(source: str | Path, out: str | Path, repo_id: str | None = None, zoo: str | Path | None = None) -> Path:
    """Write and check the repository folder of a trained model in `out`, which must not exist yet (or be an empty
    folder). It is built beside `out` and moved there only when every check passes, so a failure leaves nothing.

    `repo_id` defaults to `default_repo_id` (the paper tag's name only for a run in the paper's setting). `zoo`, a
    folder of `<architecture>.<tag>` folders (the checkout's hub/weights), supplies the comparison with the same
    network with or without FSR that the card then carries (as `comparison.json`)."""
    src, out = source_folder(source), Path(out)
    if not (src / METRICS_NAME).is_file():
        raise PublishError(
            f"{src} has no {METRICS_NAME}: a published model needs measured results. Evaluate it "
            "first (training/train.py writes them at the end of a run)."
        )
    record = read_record(src)
    if record.train:  # a record of an older run may hold this machine's paths: they are not published
        record.metrics["train_config"] = portable_config(record.train)
    if record.config.get("architecture") == ATTACHED:
        raise PublishError(
            f"{src} holds FSR attached to a timm CNN ({record.config.get('backbone')}): a zoo repository carries code "
            "that loads the zoo's own networks without fsr_models, which this one is not. Push the folder with "
            "FSRForImageClassification.from_pretrained(folder).push_to_hub(repo_id); it then loads after "
            "`import fsr_models`."
        )
    record.comparison = zoo_counterpart(record, zoo)
    repo_id = repo_id or default_repo_id(record)
    check_repo_id(repo_id)
    card = model_card(record, repo_id)  # fails on metrics without results
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty folder: export into a new folder")
    weights = read_weights(src)  # shards merged; a corrupt one fails here, before anything is written
    partial = out.with_name(out.name + ".partial")
    if partial.exists():  # never removed here: it is not known to be ours
        raise FileExistsError(f"{partial} exists (left by an interrupted export?): remove it or export elsewhere")
    partial.mkdir(parents=True)
    try:
        config = {**json.loads((src / CONFIG_NAME).read_text()), "auto_map": AUTO_MAP}
        (partial / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        write_remote_code(partial)
        save_weights(weights, partial / WEIGHTS_NAME)
        (partial / IMAGE_PROCESSOR_NAME).write_text(image_processor_config(src))  # also for folders saved without it
        (partial / METRICS_NAME).write_text(json.dumps(record.metrics, indent=2))
        if record.train:  # what the card's command reads
            (partial / TRAIN_CONFIG_NAME).write_text(yaml.safe_dump(record.train, sort_keys=False))
        for name in (FSR_HEADS_NAME, ROBUSTNESS_NAME, ADAPTIVE_NAME, CURVE_NAME, FIGURE_NAME):
            if (src / name).is_file():
                shutil.copyfile(src / name, partial / name)
        if record.comparison:
            (partial / COMPARISON_NAME).write_text(json.dumps(record.comparison, indent=2))
        card.save(partial / CARD_NAME)
        check_repo_folder(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    partial.rename(out)
    return out


def check_repo_folder(folder: str | Path, repo_id: str | None = None) -> list[str]:
    """Every check a folder passes before upload (to `repo_id`, when given); returns the files to upload.

    The weights must load into the architecture config.json names, in timm, in transformers and in the remote code
    the folder carries (which must be this package's, mapped by `auto_map`), with identical logits; the image
    processor must be the one config.json gives, the auxiliary heads (when there) the network's own; the card must be
    the one generated from metrics.json and the folder's other records (for `repo_id`), its metadata holding those
    results.
    """
    folder = Path(folder)
    files = sorted(p.name for p in folder.iterdir())
    missing = [n for n in REQUIRED_FILES if n not in files]
    if missing:
        raise PublishError(f"{folder} lacks {missing}: make the folder with hub/publish.py (export_repo)")
    unexpected = [n for n in files if n not in REPO_FILES]
    if unexpected:
        raise PublishError(f"{folder} holds {unexpected}: a zoo repository holds only {list(REPO_FILES)}")
    try:
        timm_model = load_model(folder).eval()
        hf_model = FSRForImageClassification.from_pretrained(folder).eval()
    except (ValueError, RuntimeError, KeyError) as e:
        raise PublishError(
            f"{folder}: the weights do not load into the architecture its {CONFIG_NAME} names: {e}"
        ) from e
    stale_code = [n for n, source in REMOTE_CODE_SOURCES.items() if (folder / n).read_bytes() != source.read_bytes()]
    if stale_code or json.loads((folder / CONFIG_NAME).read_text()).get("auto_map") != AUTO_MAP:
        raise PublishError(
            f"{folder}: the code for trust_remote_code=True ({', '.join(stale_code) or 'auto_map in config.json'}) is "
            "not this version's: export the folder again"
        )
    remote_model = remote_model_class(folder).from_pretrained(folder).eval()
    x = torch.rand(2, *timm_model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = timm_model(x)
        if not torch.equal(logits, hf_model(pixel_values=x).logits):
            raise PublishError(f"{folder}: timm and transformers give different logits for the same weights")
        if not torch.equal(logits, remote_model(pixel_values=x).logits):
            raise PublishError(f"{folder}: the code for trust_remote_code=True gives other logits than timm's")
    if (folder / IMAGE_PROCESSOR_NAME).read_text() != image_processor_config(folder):
        raise PublishError(
            f"{folder / IMAGE_PROCESSOR_NAME} is not the image processor of {CONFIG_NAME} (edited by "
            "hand?): export the folder again"
        )
    if (folder / FSR_HEADS_NAME).is_file():
        check_fsr_heads(folder / FSR_HEADS_NAME, timm_model)
    record = read_record(folder)
    try:
        expected = record.eval_results
    except (ValueError, KeyError) as e:
        raise PublishError(f"{folder / METRICS_NAME}: {e}") from e
    card = ModelCard.load(folder / CARD_NAME)
    if card.data.eval_results != expected:
        raise PublishError(
            f"{folder / CARD_NAME}: its eval results are not those of {METRICS_NAME}; regenerate the "
            "card with hub/publish.py instead of editing it"
        )
    if card.content != model_card(record, card.data.model_name).content:
        raise PublishError(
            f"{folder / CARD_NAME} is not the card generated from {METRICS_NAME} and the folder's "
            "other records (edited by hand?): regenerate it with hub/publish.py"
        )
    if repo_id is not None and card.data.model_name != repo_id:
        raise PublishError(
            f"{folder / CARD_NAME} was written for {card.data.model_name}, not {repo_id}: export again "
            f"with --repo-id {repo_id}"
        )
    return [n for n in files if n in REPO_FILES]


def write_remote_code(folder: str | Path) -> None:
    """Copy the code for trust_remote_code=True into `folder`, each file verbatim from its source in the package."""
    for name, source in REMOTE_CODE_SOURCES.items():
        shutil.copyfile(source, Path(folder) / name)


def remote_model_class(folder: str | Path) -> type:
    """The model class of the code in `folder`, loaded as `trust_remote_code=True` loads it, by transformers' loader
    of remote code (which fetches the files it imports relatively), not from this package: what users get."""
    return get_class_from_dynamic_module(AUTO_MAP["AutoModelForImageClassification"], str(folder))


def check_fsr_heads(path: Path, model: torch.nn.Module) -> None:
    """The auxiliary heads beside a network must be its own: its FSR positions, widths and classes."""
    try:
        heads = read_fsr_heads(path, FSRLoss.for_model(model))
    except ValueError as e:  # also: a network without FSR has no heads
        raise PublishError(f"{path} is not a set of auxiliary heads of this network: {e}") from e
    if heads["heads.0.weight"].shape[0] != model.num_classes:
        raise PublishError(
            f"{path} holds heads for {heads['heads.0.weight'].shape[0]} classes, the network has "
            f"{model.num_classes}: export the folder again"
        )


def upload_plan(folder: str | Path, files: list[str]) -> list[dict]:
    """What an upload sends: each file's path in the repository, size and SHA-256."""
    folder = Path(folder)
    return [
        {
            "path": n,
            "bytes": (folder / n).stat().st_size,
            "sha256": hashlib.sha256((folder / n).read_bytes()).hexdigest(),
        }
        for n in files
    ]


def hub_token(repo_id: str | None = None, token: str | None = None) -> str:
    """`token`, or the one of the environment (HF_TOKEN, `hf auth login`); a PublishError says how to set one."""
    token = token or get_token()
    if not token:
        owner = repo_id.split("/")[0] if repo_id else "the repository's owner"
        raise PublishError(
            f"no Hub token: set HF_TOKEN to a token with write access to {owner} (or run `hf auth login`), "
            "or use the dry run"
        )
    return token


def publish(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    dry_run: bool = False,
    commit_message: str | None = None,
) -> dict:
    """Check `folder`, then make `repo_id` hold exactly its files, in one commit, with a token from the environment
    (HF_TOKEN or `hf auth login`): the repository is created if needed, and files of an earlier upload that this
    one does not have (old shards, say) are deleted in the same commit. `private` (when not None) sets the
    repository's visibility, also for an existing one. `dry_run` only checks and returns what would be sent."""
    folder = Path(folder)
    check_repo_id(repo_id)
    files = check_repo_folder(folder, repo_id)
    result = {
        "repo_id": repo_id,
        "files": upload_plan(folder, files),
        "deleted": [],
        "commit": None,
        "commit_url": None,
    }
    if dry_run:
        return result
    api = HfApi(token=hub_token(repo_id, token))
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if private is not None:  # create_repo ignores `private` for a repository that exists
            api.update_repo_settings(repo_id, private=private)
        stale = sorted(set(api.list_repo_files(repo_id)) - set(files) - {".gitattributes"})
        operations = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(folder / n)) for n in files]
        commit = api.create_commit(  # one commit: the repository changes whole or not at all
            repo_id,
            operations=operations + [CommitOperationDelete(path_in_repo=n) for n in stale],
            commit_message=commit_message or f"Upload {repo_id.split('/')[-1]} (fsr-zoo hub/publish.py)",
        )
    except Exception as e:  # noqa: BLE001 - the network's errors change class with the HTTP library
        reason = " ".join(str(e).split())[:300]
        raise PublishError(
            f"the upload to {constants.ENDPOINT} failed ({type(e).__name__}: {reason}); no commit was made, so "
            f"{repo_id} holds what it held before: run the same command again once the Hub can be reached"
        ) from None
    result.update(deleted=stale, commit=commit.oid, commit_url=commit.commit_url)
    return result
