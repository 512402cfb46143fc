#!/usr/bin/env python3
"""Publish a trained model to the Hugging Face Hub as a zoo repository (weights, config, metrics, model card).

    python hub/publish.py runs/<run> --dry-run                 # export into runs/hub/<name>, check, list the files
    HF_TOKEN=hf_... python hub/publish.py runs/<run>           # ... and upload them in one commit
    python hub/publish.py hub/weights/resnet18_fsr.at_cifar10 --repo-id me/resnet18-fsr --out /tmp/repo

SOURCE is a training run folder (its model/ is used) or a zoo folder with metrics.json. The repository id defaults
to fsr-zoo/<architecture>.<tag>. Nothing is sent when a check fails: weights that do not load into the
architecture config.json names, timm and transformers disagreeing, or a card without measured results.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's fsr_models, also when not installed

from fsr_models.publish import CONFIG_NAME, default_repo_id, export_repo, publish, source_folder  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="training run folder or zoo folder with metrics.json")
    parser.add_argument("--repo-id", help="Hub repository (default fsr-zoo/<architecture>.<tag>)")
    parser.add_argument("--out", help="where to write the repository folder (default runs/hub/<repository name>)")
    parser.add_argument("--dry-run", action="store_true", help="export and check, then list what would be sent")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--message", help="commit message")
    args = parser.parse_args(argv)

    config = json.loads((source_folder(args.source) / CONFIG_NAME).read_text())
    repo_id = args.repo_id or default_repo_id(config)
    out = export_repo(args.source, args.out or Path("runs/hub") / repo_id.split("/")[-1], repo_id)
    result = publish(out, repo_id, private=args.private, dry_run=args.dry_run, commit_message=args.message)
    print(f"{'would upload' if args.dry_run else 'uploaded'} {out} -> {repo_id}:")
    for f in result["files"]:
        print(f"  {f['path']:<20} {f['bytes']:>12,d} bytes  sha256 {f['sha256']}")
    if result["commit"]:
        print(f"commit {result['commit']}: {result['commit_url']}")
        print(f"Add '{repo_id.split('/')[-1]}' to PUBLISHED in fsr_models/models/_common.py so that "
              "timm.create_model(..., pretrained=True) finds it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
