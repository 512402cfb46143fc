"""Model cards for the zoo's Hub repositories, written from what a run measured (metrics.json), never by hand.

`metrics.json` is the training script's record: the test-set results of the final evaluation, the full training
config under `train_config`, and, when `training/gpu_run.sh` or a later evaluation added it, the report of
`python -m fsr_models.evaluate` under `evaluation`. Every number in a card comes from there.
"""
from __future__ import annotations

import math

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .evaluate import HUB_DATASETS, accuracy_table, attack_settings, eval_results

PAPER_EPOCHS = 100
BACKBONE_NAMES = {"resnet18": "ResNet-18", "vgg16": "VGG16", "wrn34_10": "WideResNet-34-10"}
METHOD_NAMES = {"at": "PGD adversarial training (AT, Madry et al.)", "trades": "TRADES", "mart": "MART",
                "natural": "natural (non-adversarial) training"}  # fmt: skip
CITATION = """@inproceedings{kim2023fsr,
  title     = {Feature Separation and Recalibration for Adversarial Robustness},
  author    = {Kim, Woo Jae and Cho, Yoonki and Jung, Junsik and Yoon, Sung-Eui},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2023}
}"""


def final_test_report(metrics: dict) -> dict:
    """The training run's final test (clean and PGD-k, step eps/10, no random start) in the evaluation report's form."""
    pgd = next(k.removesuffix("_acc") for k in metrics if k.startswith("pgd") and k.endswith("_acc"))
    eps = metrics["eps"]
    return {"dataset": metrics.get("train_config", {}).get("dataset", "cifar10"), "images": metrics["test_images"],
            "eps": eps, "accuracy": {"natural": metrics["natural_acc"], pgd: metrics[f"{pgd}_acc"]},
            "settings": {"natural": attack_settings("natural", eps, False),
                         pgd: {**attack_settings("pgd20", eps, False), "steps": int(pgd.removeprefix("pgd"))}},
            "ensemble_over": []}  # fmt: skip


def measured_reports(metrics: dict) -> list[dict]:
    """The reports a card shows: the run's own test, then the evaluation report if there is one."""
    missing = [k for k in ("natural_acc", "test_images", "eps") if k not in metrics]
    if missing or not any(k.startswith("pgd") and k.endswith("_acc") for k in metrics):
        raise ValueError(
            f"metrics.json has no measured robustness ({missing or 'no pgd*_acc'} missing): a card needs the test "
            "results that training/train.py writes (natural_acc, pgdK_acc, test_images, eps)"
        )
    return [final_test_report(metrics)] + ([metrics["evaluation"]] if "evaluation" in metrics else [])


def card_eval_results(metrics: dict) -> list[EvalResult]:
    return [result for report in measured_reports(metrics) for result in eval_results(report)]


def model_card(config: dict, metrics: dict, repo_id: str) -> ModelCard:
    """The card of one Hub repository: metadata (with model-index results) and the prose a user needs."""
    dataset = metrics.get("train_config", {}).get("dataset", "cifar10")
    hub_dataset, dataset_name = HUB_DATASETS.get(dataset, (dataset, dataset))
    data = ModelCardData(
        library_name="timm", license="mit", pipeline_tag="image-classification", datasets=[hub_dataset],
        tags=["image-classification", "timm", "transformers", "safetensors", "adversarial-robustness",
              "adversarial-training", "feature-separation-and-recalibration"],
        model_name=repo_id, eval_results=card_eval_results(metrics),
    )  # fmt: skip
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{_body(config, metrics, repo_id, dataset, dataset_name)}")


def _body(config: dict, metrics: dict, repo_id: str, dataset: str, dataset_name: str) -> str:
    arch, tag = config["architecture"], config.get("pretrained_cfg", {}).get("tag", "")
    train = metrics.get("train_config")
    lines = [f"# {repo_id.split('/')[-1]}", ""]
    fsr = config.get("fsr_stages") or []
    where = (f"with a Feature Separation and Recalibration (FSR) module after stage {', '.join(map(str, fsr))} of the "
             f"backbone (Kim et al., CVPR 2023)") if fsr else "without FSR (the baseline of the FSR paper)"  # fmt: skip
    backbone = BACKBONE_NAMES.get(config["backbone"], config["backbone"])
    channels, height, width = config["pretrained_cfg"]["input_size"]
    size = f"{height}x{width}"
    lines += [f"A {backbone} image classifier for {dataset_name} ({config['num_classes']} classes, {size} "
              f"inputs in [0, 1], no normalisation) {where}, trained to resist L-inf attacks of eps "
              f"{metrics['eps'] * 255:g}/255. Part of the fsr-zoo model zoo: `timm` architecture `{arch}`, tag "
              f"`{tag}`.", ""]  # fmt: skip
    if fsr:
        lines += ["FSR splits the feature map with a learned mask into robust and non-robust activations "
                  "(Separation) and adjusts the non-robust ones to carry useful cues again (Recalibration); the "
                  "sum replaces the feature map. The auxiliary heads that train the mask are not part of this "
                  "checkpoint: they are only needed for training.", ""]  # fmt: skip

    lines += ["## Training", ""]
    if train is None:
        lines += ["No training config was recorded with these weights.", ""]
    else:
        epochs = metrics.get("epochs", train["epochs"])
        method = METHOD_NAMES.get(train["method"], train["method"])
        if train["method"] in ("trades", "mart"):
            method += f" (beta {train['beta']:g})"
        if epochs < PAPER_EPOCHS:
            lines += [f"**Short schedule: {epochs} epochs, not the paper's {PAPER_EPOCHS}-epoch recipe.** Expect "
                      "lower accuracy than the paper reports.", ""]  # fmt: skip
        lr = train["lr"] * train["batch_size"] / 128
        lines += [
            f"- Method: {method}" + (f" + FSR losses (lambda_sep {train['lambda_sep']:g}, lambda_rec "
                                     f"{train['lambda_rec']:g})" if fsr else ""),  # fmt: skip
            f"- Attack during training: PGD-{train['attack_steps']}, eps {train['eps'] * 255:g}/255, step "
            f"{train['attack_step'] * 255:g}/255, random start {train['random_start']}",
            f"- {epochs} epochs (best epoch by validation PGD accuracy: {metrics.get('best_epoch', '?')}), batch "
            f"{train['batch_size']}, SGD lr {lr:g} (momentum {train['momentum']:g}, weight decay "
            f"{train['weight_decay']:g}), x{train['lr_gamma']:g} at {train['lr_milestones']} of the epochs, "
            f"{train['precision']}, augmentation {'pad-4 crop + flip' if train['augment'] else 'none'}",
            *([f"- Training time: {metrics['train_seconds']:.0f} s"] if "train_seconds" in metrics else []),
            "",
            "The full config is `train_config.yaml` in this repository; with the fsr-zoo code, "
            f"`python training/train.py --config train_config.yaml --set data_dir=<{dataset_name} folder> "
            "output_dir=<new folder>" + (f" epochs={epochs} time_budget_min=null" if train.get("time_budget_min")
                                         else "") + "` repeats the run.",
            "",
        ]  # fmt: skip

    lines += ["## Evaluation", ""]
    for report in measured_reports(metrics):
        starts = "a random start and 5 restarts" if report.get("strong") else "no random start (the paper's protocol)"
        lines += [f"Accuracy (%) on the first {report['images']} {dataset_name} test images, eps "
                  f"{report['eps'] * 255:g}/255 (L-inf), eval mode, PGD with step eps/10 and {starts}:", "",
                  *accuracy_table(report), ""]  # fmt: skip
    eps_flag = "" if math.isclose(metrics["eps"], 8 / 255) else f" --eps {metrics['eps']!r}"
    lines += ["AutoAttack is the standard version of the reference code (pyautoattack); Ensemble counts an image only "
              "if every listed white-box attack fails on it. Each metric's settings are in this card's metadata. "
              f"Reproduce with `python -m fsr_models.evaluate hf-hub:{repo_id} --dataset {dataset} --data-dir "
              f"<{dataset_name} folder>{eps_flag} --n 1000 --attacks natural pgd20 autoattack`.", ""]

    lines += ["## Use", "", "```python", "import fsr_models  # registers the architectures with timm and transformers",
              "import timm", "", f"model = timm.create_model('hf-hub:{repo_id}', pretrained=True).eval()",
              f"logits = model(images)  # images: float tensor (N, {channels}, {height}, {width}) in [0, 1]", "",
              "from transformers import AutoModelForImageClassification", "",
              f"model = AutoModelForImageClassification.from_pretrained('{repo_id}')",
              "logits = model(pixel_values=images).logits", "```", ""]  # fmt: skip
    lines += ["## Intended use and limits", "",
              f"A research checkpoint for studying adversarial robustness on {dataset_name}. Its robustness holds "
              f"only in the threat model it was trained and measured for: L-inf perturbations of at most "
              f"{metrics['eps'] * 255:g}/255 on {dataset_name}-like {size} images. It is not certified, it says "
              "nothing about other norms, larger budgets, patches, corruptions or other data, and stronger or "
              "adaptive attacks may lower the figures above. Inputs must be [0, 1] pixels without normalisation.",
              ""]  # fmt: skip
    lines += ["## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)

