# Two commands for a learner: `make lab` (JupyterLab on the course) and `make test` (the whole suite).
# Both create .venv when missing and install the project once; a second run only checks a stamp file.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.llmlab-installed
# Without an NVIDIA GPU: this pin. Where a local CPU wheel is on pip's path (the course machines) pip takes it;
# on a user's Linux machine PyPI's torch==2.13.0 is the CUDA build (it also runs on CPU), so the fallback
# asks PyTorch's CPU index instead only when the pin cannot be installed. With a GPU: plain `torch` (CUDA).
TORCH_CPU ?= torch==2.13.0
LAB_PORT ?= 8888
LAB_ARGS ?=
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: install lab test test-fast lint format bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	@if ! $(PY) -c "import torch" 2>/dev/null; then \
	  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	    echo "NVIDIA GPU found: installing the CUDA build of torch"; $(PY) -m pip install torch; \
	  else \
	    echo "No NVIDIA GPU: installing $(TORCH_CPU) (a local CPU wheel where one is on pip's path)"; \
	    $(PY) -m pip install "$(TORCH_CPU)" || $(PY) -m pip install torch --index-url https://download.pytorch.org/whl/cpu; \
	  fi; \
	fi
	$(PY) -m pip install -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --port=$(LAB_PORT) $(ROOT_FLAG) $(LAB_ARGS)

# Notebooks run in fast mode (LLMLAB_FAST=1: tiny step counts, same code path). One thread per process
# by default: on a shared 2-core machine two-thread steps stall whenever a neighbour holds a core.
test: lint
	LLMLAB_FAST=1 OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q tests --nbmake notebooks

# Unit tests without the slow ones (subprocesses, DDP, SIGKILL) and without the notebooks: for a quick check.
test-fast: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(VENV)/bin/ruff check llmlab tests bench tools
	$(VENV)/bin/ruff format --check llmlab tests bench tools

format: $(STAMP)
	$(VENV)/bin/ruff check --fix llmlab tests bench tools
	$(VENV)/bin/ruff format llmlab tests bench tools

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
