"""Write the config.json that this environment's transformers release saves for the tiny ResNet-18-FSR of the
contract tests, as tests/data/configs/transformers-<version>.json: run it under the oldest and the newest allowed
releases (`.venv-oldest/bin/python tests/data/configs/write.py`, `.venv/bin/python ...`) and commit both."""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for the contract tests' own model
import transformers  # noqa: E402
from test_ecosystem_contracts import saved_config  # noqa: E402

with tempfile.TemporaryDirectory() as folder:
    config = saved_config(Path(folder))
target = Path(__file__).with_name(f"transformers-{transformers.__version__}.json")
target.write_text(json.dumps(config, indent=2) + "\n")
print(f"wrote {target}")
