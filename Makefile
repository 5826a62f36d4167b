# Two commands for a newcomer: `make demo` runs the main job, `make test` the suite.
# Both create .venv and install the package (editable, with dev extras) when needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.aideploy-installed
DEMO_OUT ?= artifacts/demo

.PHONY: help venv demo demo-full test test-fast tools lint docs notebooks clean

help:
	@echo "make demo      set up .venv and run the pipeline in fast mode (FULL=1 or make demo-full: full run)"
	@echo "make test      set up .venv with dev extras and run the whole test suite"
	@echo "make docs      build the documentation site into docs/_build/html"
	@echo "make notebooks re-execute every notebook in full mode (commits the outputs)"
	@echo "make lint      ruff"

# Re-install when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The main job end to end (aideploy pipeline): data, training, tuning, pruning,
# quantization, conversion, parity and benchmark, publishing into a model
# repository, and a report. Fast mode by default (about a minute); `make demo FULL=1`
# or `make demo-full` runs the whole list (many minutes). A rerun resumes. The
# pipeline's JSON line goes to $(DEMO_OUT)/pipeline.log (and summary.json), not to
# the screen; bash's pipefail keeps the pipeline's exit status.
demo: SHELL := /bin/bash
demo: .SHELLFLAGS := -o pipefail -c
demo: $(STAMP)
	@mkdir -p $(DEMO_OUT)
	@$(if $(filter 1,$(FULL)),AIDEPLOY_FAST=0 $(BIN)/aideploy pipeline,$(BIN)/aideploy pipeline --fast) \
		--model mlp --out $(DEMO_OUT) | tee $(DEMO_OUT)/pipeline.log | grep -v '^{'
	@echo
	@echo "Serve the model (Ctrl-C stops it):  $(BIN)/aideploy serve $(DEMO_OUT)/repository"
	@echo "Ask it for a prediction:            see README.md, 'Serving'"
	@echo "Open the notebooks:                 $(BIN)/jupyter lab notebooks/"

demo-full:
	$(MAKE) --no-print-directory demo FULL=1 DEMO_OUT=artifacts/pipeline-full

# Debian's prometheus package (promtool and a server) for tests/test_ops.py: installed
# when missing and we may (root or password-less sudo); otherwise one line says how,
# and those tests skip.
tools:
	sh ops/install-tools.sh

test: $(STAMP) tools
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check aideploy tests benchmarks

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

notebooks: $(STAMP)
	AIDEPLOY_FAST=0 $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=3600 notebooks/[0-9]*.ipynb

clean:
	rm -rf docs/_build docs/notebooks .pytest_cache
