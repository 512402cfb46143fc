#!/usr/bin/env python3
"""Join the weight shards of zoo folders into one model.safetensors each, as the Hub repositories hold weights.

    python hub/merge_shards.py runs/gpu-out/model            # after `tar -xf run.tar` beside the GPU run's shards
    python hub/merge_shards.py hub/weights/*                  # every folder; those with one file already are skipped

The merged file is read back and compared with the shards before the shards and their index are removed, so an
interrupted merge loses nothing: run the command again to finish it.
"""

import argparse
import sys

from fsr_models.hub.weight_files import merge_shards


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="zoo folders holding model-0000i-of-0000n.safetensors + index")
    args = parser.parse_args(argv)
    for folder in args.folders:
        try:
            print(f"{folder}: {merge_shards(folder)}")
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
