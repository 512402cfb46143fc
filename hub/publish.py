#!/usr/bin/env python3
"""Publish a trained model to the Hugging Face Hub as a zoo repository (weights, config, metrics, model card).

    python hub/publish.py hub/weights/resnet18_fsr.at_cifar10 --dry-run --out /tmp/repo   # export, check, list
    HF_TOKEN=hf_... python hub/publish.py /tmp/repo             # upload that checked folder as it is
    HF_TOKEN=hf_... python hub/publish.py runs/<run>            # or export (to a temporary folder) and upload

SOURCE is a training run folder (its model/ is used), a zoo folder with metrics.json (hub/weights/<name>), or a
repository folder exported earlier with --out. The repository id defaults to fsr-zoo/<architecture>.<tag> for a run
in the paper's setting of its tag, and to that name with the run's deviations appended for any other run (other
widths or FSR settings, a subset of the training data, another eps), e.g.
fsr-zoo/resnet18_fsr.at_cifar10.widths16-32-64-128.train250. Where hub/weights holds the same network with or
without FSR for the same tag, the card compares the two. Nothing is sent when a check fails: weights that do not
load into the architecture config.json names, timm and transformers disagreeing, or a card that is not the one
generated from measured results. The upload makes the repository hold exactly these files (older ones, e.g. shards,
are deleted in the same commit).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from huggingface_hub import ModelCard

from fsr_models.hub.naming import paper_repo_id
from fsr_models.hub.repository import CARD_NAME, CONFIG_NAME, export_repo, hub_token, is_repo_folder, publish

ZOO = Path(__file__).resolve().parent / "weights"
PUBLISHED = ZOO.with_name("published.json")  # what the zoo's documents (hub/zoo_card.py) list as on the Hub


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="training run folder, zoo folder with metrics.json, or exported folder")
    parser.add_argument("--repo-id", help="Hub repository (default: fsr-zoo/<architecture>.<tag>[.<deviations>])")
    parser.add_argument("--out", help="keep the exported repository folder here (default: a temporary folder)")
    parser.add_argument("--dry-run", action="store_true", help="export and check, then list what would be sent")
    parser.add_argument("--private", action="store_true", help="make the repository private (also an existing one)")
    parser.add_argument("--message", help="commit message")
    args = parser.parse_args(argv)

    try:
        with tempfile.TemporaryDirectory(prefix="fsr-zoo-repo-") as scratch:
            return run(args, Path(scratch) / "repo")
    except (ValueError, FileNotFoundError, FileExistsError) as e:  # PublishError is a ValueError too
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args, scratch: Path) -> int:
    if not args.dry_run:
        hub_token(args.repo_id)  # before an export of the whole weights that could not be sent
    if is_repo_folder(args.source):  # exported and checked earlier: publish it as it is
        folder = Path(args.source)
    else:
        folder = export_repo(args.source, args.out or scratch, args.repo_id, zoo=ZOO)
    repo_id = args.repo_id or ModelCard.load(folder / CARD_NAME).data.model_name
    result = publish(folder, repo_id, private=args.private or None, dry_run=args.dry_run, commit_message=args.message)
    print(f"{'would upload' if args.dry_run else 'uploaded'} {folder} -> {repo_id}:")
    for f in result["files"]:
        print(f"  {f['path']:<24} {f['bytes']:>12,d} bytes  sha256 {f['sha256']}")
    if args.dry_run and not args.out and not is_repo_folder(args.source):
        print("(the exported folder was temporary: pass --out DIR to keep it, then publish DIR)")
    for name in result["deleted"]:
        print(f"  deleted from the repository: {name}")
    if result["commit"]:
        print(f"commit {result['commit']}: {result['commit_url']}")
        if repo_id == paper_repo_id(json.loads((folder / CONFIG_NAME).read_text())):
            name = repo_id.split("/")[-1]
            PUBLISHED.write_text(json.dumps(sorted(set(json.loads(PUBLISHED.read_text())) | {name}), indent=2) + "\n")
            print(
                f"timm.create_model('{name}', pretrained=True) now downloads it; {PUBLISHED} lists it for the zoo's "
                "documents. Next: python hub/zoo_card.py"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
