# Every target builds its own virtual environment first, so a fresh clone needs nothing installed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP_FLAGS := --quiet --disable-pip-version-check

.PHONY: help install native demo test lint fixtures docs bench bench-revival clean

help:
	@echo "make demo      audit a bundled torch.export fixture (.pt2) and print its table"
	@echo "make test      run the test suite (creates $(VENV) on first use)"
	@echo "make lint      ruff + mypy"
	@echo "make fixtures  regenerate fixtures/ from fixtures/make_fixtures.py"
	@echo "make docs      regenerate the README's demo table and docs/html-report.png"
	@echo "make bench     run the benchmark; writes bench/RESULTS.md"
	@echo "make bench-revival  do dead units come back after fine-tuning? each rewrite mode (a few minutes)"
	@echo "make native    (re)build the compiled statistics kernel into the user cache"
	@echo "make clean     remove the virtual environment and caches"

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -c requirements/constraints.txt -e '.[dev]'
	$(PY) -m pip install $(PIP_FLAGS) --no-deps -c requirements/constraints.txt silero-vad rapidocr-onnxruntime resemblyzer magika
	$(PY) -m actaudit.backends.torch.native
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/actaudit audit fixtures/models/cnn_dead.pt2 --calib fixtures/data/cnn_images.npy

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check actaudit tests fixtures bench docs
	$(VENV)/bin/ruff format --check actaudit tests fixtures bench docs
	$(VENV)/bin/mypy

fixtures: $(STAMP)
	$(PY) fixtures/make_fixtures.py

docs: $(STAMP)
	$(PY) docs/make_docs.py

# The C statistics kernel is also built on first use; without a C compiler the pure-torch path runs.
native: $(STAMP)
	$(PY) -c "from actaudit.backends.torch import native; import torch; print(native.build(force=True)[1])"

bench: $(STAMP)
	$(PY) bench/run_bench.py --out bench/RESULTS.md

# Not part of `make bench` (it trains models: minutes, not seconds); it backs the README's choice of modes.
bench-revival: $(STAMP)
	$(PY) bench/revival.py --seeds 3 --out bench/REVIVAL.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
