# `make demo` and `make test` work on a fresh machine with only Python >= 3.10.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; override (e.g. TORCH_SPEC='torch>=2.4') to pick another.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tumorseg-installed

.PHONY: demo test lint bench screenshots official clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tumorseg demo --out demo-output

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks experiments docs
	$(VENV)/bin/ruff format --check src tests benchmarks experiments docs
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) benchmarks/data_io.py
	$(PY) benchmarks/model_speed.py
	$(PY) benchmarks/patient_speed.py

# The official BraTS scorer, in an interpreter of its own (it pins NumPy below tumorseg's), for the
# test that checks tumorseg's metrics against it patient by patient (skipped without it).
OFFICIAL := .venv-official/.installed
$(OFFICIAL):
	test -x .venv-official/bin/python || $(PYTHON) -m venv .venv-official
	.venv-official/bin/python -m pip install --quiet brats-evaluation==0.0.10 panoptica==2.1.7
	touch $(OFFICIAL)

official: $(OFFICIAL)

screenshots: $(STAMP)
	$(PY) docs/screenshots.py

clean:
	rm -rf demo-output .pytest_cache
