# One virtual environment in .venv; torch and torchvision pinned to the builds this project is tested with.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo tour test test-oldest bench app chromium
# The main job: single-step AT + FSR on real CIFAR-10 images for about 3 minutes on a CPU, evaluated, written as a
# Hub folder.
demo: $(VENV)/.installed
	$(PY) training/train.py --config training/configs/quickstart_cpu.yaml --set output_dir=runs/quickstart-$$(date +%Y%m%d-%H%M%S)
tour: $(VENV)/.installed
	$(PY) -m fsr_models.tour
test: $(VENV)/.installed
	$(PY) -m pytest
# The contracts with timm and transformers (tests/test_ecosystem_contracts.py) against the oldest releases of the two
# that pyproject.toml allows (its lower bounds), in a second environment beside .venv.
OLDEST := $(shell sed -nE 's/^ *"(transformers|timm)>=([0-9.]+).*/\1==\2/p' pyproject.toml)
test-oldest:
	test -x .venv-oldest/bin/python || python3 -m venv .venv-oldest
	.venv-oldest/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	.venv-oldest/bin/python -m pip install -q -e . $(OLDEST) "pytest>=8" "pytest-xdist>=3.5" "olah>=0.5.4"
	.venv-oldest/bin/python -m pytest tests/test_ecosystem_contracts.py
app: $(VENV)/.installed
	$(PY) app.py
# Headless Chromium for the test of the interactive page, only when asked (Debian's packages, apt-get as root; the
# test is skipped without them).
chromium:
	@command -v chromedriver >/dev/null || (apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1)) || \
		echo "Chromium could not be installed (apt-get as root): the browser test will be skipped"
bench: $(VENV)/.installed
	$(PY) benchmarks/bench_models.py

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $@
