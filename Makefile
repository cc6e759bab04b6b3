# Two commands for a fresh machine (Python 3.11):
#   make demo   install everything (pinned) into .venv and run the whole pipeline on the built-in demo data
#   make test   install if needed, lint (ruff), then run the test suite
VENV ?= .venv
PYTHON ?= python3.11
BIN := $(VENV)/bin
STAMP := $(VENV)/.gac-installed
# dvc runs each stage's `gac ...` command through the shell: the venv's bin must be on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install demo test

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==26.3
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 dvc repro

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --durations=15
