# Two commands set up a fresh machine and do the work:
#   make run    — venv + dependencies (once), then the main job on its embedded default (the offline mini world)
#   (make run-more adds the second-wave methods to the same results and leaderboard: a second command because the
#   default grid with them does not fit the 10-minute budget on 2 cores)
#   make test   — venv + dependencies (once), then the whole test suite (SLURM tests start their own cluster;
#                 the HTML leaderboard's browser test uses Debian's headless Chromium, installed here when missing)
# TORCH_SPEC picks the torch/torchvision pair; the default is the pair these machines carry as local files.
# constraints.txt pins every other package to the reference environment (pyproject.toml keeps lower bounds).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.bench-installed
RUN_ARGS ?=
PYTEST_ARGS ?=

export HF_HUB_OFFLINE ?= 1

.PHONY: setup browser run run-more test test-fast lint clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Debian's chromium for tests/test_html.py (idempotent; says why and installs nothing without root or apt-get)
browser:
	bash tests/install_chromium.sh

run: setup
	$(BIN)/bench run $(RUN_ARGS)

MORE_METHODS ?= cocoop,kgcoop,maple,promptsrc,tip_adapter,tip_adapter_f,bitfit
run-more: setup
	$(BIN)/bench run --methods $(MORE_METHODS) $(RUN_ARGS)

test: setup browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup browser
	$(BIN)/python -m pytest -m "not slow and not slurm" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check bench tests benchmarks

clean-venv:
	rm -rf $(VENV)
