"""The interactive page, as a Hugging Face Space runs it: `python app.py`, then open http://127.0.0.1:7860.
The page itself is fsr_models/app.py (pip install -e ".[app]")."""

from pathlib import Path

from fsr_models.app import build

demo = build(weights=Path(__file__).resolve().parent / "hub" / "weights")  # the trained pair of this checkout

if __name__ == "__main__":
    demo.launch(server_name="127.0.0.1")
