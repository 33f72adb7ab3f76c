# Two commands do everything on a fresh machine: `make run` and `make test`.
# GPU users: make run TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PRESET ?= quick
BIN := $(VENV)/bin
STAMP := $(VENV)/.rnnbench-installed
# this machine's pip config names local package folders that may be absent; pip warns per package
PIP_QUIET := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: install run test test-integration clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | $(PIP_QUIET)
	# torch first, from a variable: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC) 2>&1 | $(PIP_QUIET)
	$(BIN)/python -m pip install --quiet -e ".[test]" --config-settings editable_mode=compat 2>&1 | $(PIP_QUIET)
	$(BIN)/python -c "import torch, pytorch_lightning, ray, mlflow, prefect" 
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/rnnbench run --preset $(PRESET)

test: install
	$(BIN)/python -m pytest -m "not integration"

test-integration: install
	$(BIN)/python -m pytest -m integration

clean:
	rm -rf $(VENV) .rnnbench .pytest_cache
