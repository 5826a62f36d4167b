# Two commands for a newcomer: `make demo` runs the main job, `make test` the suite.
# Both create .venv and install the package (editable, with dev extras) when needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.aideploy-installed
DEMO_OUT ?= artifacts/demo

.PHONY: help venv demo test test-fast tools lint docs notebooks clean

help:
	@echo "make demo      set up .venv and run the pipeline: train, export, benchmark"
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

# The pipeline so far: train and evaluate the MLP, export it to ONNX, TFLite and
# a SavedModel, and benchmark the runtimes: a readable table, then a short JSON
# last line (headline ratios and the path of the full results, bench/runtimes.json).
demo: $(STAMP)
	$(BIN)/aideploy train --model mlp --out $(DEMO_OUT)
	$(BIN)/aideploy convert $(DEMO_OUT)/mlp.keras --to onnx --out $(DEMO_OUT)
	$(BIN)/aideploy convert $(DEMO_OUT)/mlp.keras --to tflite --out $(DEMO_OUT)
	$(BIN)/aideploy convert $(DEMO_OUT)/mlp.keras --to saved_model --out $(DEMO_OUT)
	$(BIN)/aideploy bench $(DEMO_OUT)/mlp.keras $(DEMO_OUT)/mlp.onnx $(DEMO_OUT)/mlp.tflite --out $(DEMO_OUT)/bench

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
