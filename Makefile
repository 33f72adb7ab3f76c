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

.PHONY: install run test test-integration clean

# pip's and setuptools' chatter goes to a log, shown only when a step fails
PIP_LOG := $(VENV)/pip-install.log
PIP := $(BIN)/python -m pip install --quiet

$(STAMP): pyproject.toml
	@echo "Installing rnnbench into $(VENV) (torch: $(TORCH_SPEC); log: $(PIP_LOG))"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@: > $(PIP_LOG)
	@$(PIP) --upgrade pip >> $(PIP_LOG) 2>&1 || { cat $(PIP_LOG); exit 1; }
	@# torch first, from a variable: an unpinned torch would pull a multi-GB CUDA build
	@$(PIP) $(TORCH_SPEC) >> $(PIP_LOG) 2>&1 || { cat $(PIP_LOG); exit 1; }
	@# compat editable mode: the project root on sys.path, so Ray workers see new files too
	@$(PIP) -e ".[test]" --config-settings editable_mode=compat >> $(PIP_LOG) 2>&1 || { cat $(PIP_LOG); exit 1; }
	@$(BIN)/python -c "import torch, pytorch_lightning, ray, mlflow, prefect"
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/rnnbench run --preset $(PRESET)

test: install
	$(BIN)/python -m pytest -m "not integration and not system"

test-integration: install
	$(BIN)/python -m pytest -m "integration or system"

clean:
	rm -rf $(VENV) .rnnbench .pytest_cache
