# Two commands for a learner: `make lab` (JupyterLab on the course) and `make test` (the whole suite).
# Both create .venv when missing and install the project once; a second run only checks a stamp file.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.llmlab-installed
# The CPU build of torch for machines without an NVIDIA GPU; on a GPU machine plain `torch` (CUDA build).
TORCH_CPU ?= torch==2.13.0
LAB_PORT ?= 8888
LAB_ARGS ?=
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: install lab test test-fast bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	@if ! $(PY) -c "import torch" 2>/dev/null; then \
	  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	    echo "NVIDIA GPU found: installing the CUDA build of torch"; $(PY) -m pip install torch; \
	  else \
	    echo "No NVIDIA GPU: installing the CPU build of torch ($(TORCH_CPU))"; \
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
test: $(STAMP)
	LLMLAB_FAST=1 OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q tests --nbmake notebooks

test-fast: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
