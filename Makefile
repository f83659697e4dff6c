# Two commands for a learner: `make lab` (JupyterLab on the course) and `make test` (the whole suite).
# Both create .venv when missing and install the project once; a second run only checks a stamp file.
# With an NVIDIA GPU, `make gpu-check` checks it end to end; `make test-browser` runs three notebooks in a real
# browser (Chromium driven by Playwright).
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
BROWSER_STAMP := $(VENV)/.llmlab-browser-installed
BROWSER_ARGS ?=
NOTEBOOKS := notebooks/*.ipynb notebooks/ja/00_setup.ipynb

.PHONY: install lab test test-ja test-fast lint format bench clean gpu-check browser-deps test-browser

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
# The Japanese notebooks' code is the English code (tests/test_ja_notebooks.py checks it cell by cell), so
# `make test` runs only notebooks/ja/00 (the language switch); `make test-ja` runs them all (CI does).
test: lint
	LLMLAB_FAST=1 OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q --durations=30 tests --nbmake $(NOTEBOOKS)

test-ja: $(STAMP)
	LLMLAB_FAST=1 OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q --durations=10 --nbmake notebooks/ja

# Unit tests without the slow ones (subprocesses, DDP, SIGKILL) and without the notebooks: for a quick check.
test-fast: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(VENV)/bin/ruff check llmlab tests bench tools
	$(VENV)/bin/ruff format --check llmlab tests bench tools

format: $(STAMP)
	$(VENV)/bin/ruff check --fix llmlab tests bench tools
	$(VENV)/bin/ruff format llmlab tests bench tools

# On a CUDA machine: the cuda-marked tests, a short gpt2_124m run (tokens/s, MFU, memory, compile time), and
# doctor_report.md / .json. Without CUDA it says so in one line and exits 0.
gpu-check: $(STAMP)
	$(VENV)/bin/llmlab doctor

# Playwright into .venv (the `browser` extra), and Chromium: the system's, else Debian's via apt when root.
$(BROWSER_STAMP): $(STAMP)
	$(PY) -m pip install -e ".[dev,browser]"
	@touch $(BROWSER_STAMP)

browser-deps: $(BROWSER_STAMP)
	@if [ -n "$$LLMLAB_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	    || command -v google-chrome >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing Chromium for the browser test (apt-get install chromium)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
	  echo "make test-browser needs Chromium and this is not root, so apt is skipped: install it (Debian:" \
	    "sudo apt-get install chromium; macOS: a Google Chrome install works), or set LLMLAB_CHROMIUM=/path/to/chrome," \
	    "or run .venv/bin/playwright install chromium"; \
	fi

# Notebooks 03, 04b and 05 in JupyterLab (fast mode), driven through Chromium: run all, move sliders, press
# Train, watch the live plot and the runs table, sample in 05. Screenshots: out/browser/.
test-browser: browser-deps
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) tests/browser/check_notebooks.py $(BROWSER_ARGS)

# Every benchmark with its defaults (minutes each; not a test). Each says what it skips and why (no GPU, no nanoGPT
# checkout at ../shared/baselines/nanogpt); bench/README.md says what each measures.
bench: $(STAMP)
	for b in bench/*.py; do [ $$b = bench/common.py ] || $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
