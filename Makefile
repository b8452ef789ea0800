# The two commands: `make run` (the main job end to end) and `make test`.
# Both build .venv from nothing on a fresh machine, from requirements.lock (every package
# pinned to the version the tests passed with). torch==2.13.0 goes in first so that no other
# package's torch requirement can pull a multi-GB CUDA build.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_VERSION := 26.3
TORCH := torch==2.13.0
LOCK := requirements.lock

.PHONY: run test lint bench lock clean

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet -c $(LOCK) $(TORCH)
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[dev]"
	touch $(STAMP)

# Re-resolve pyproject.toml's ranges in a throwaway venv and pin the result (then `make test`)
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet pip==$(PIP_VERSION)
	.lock-venv/bin/python -m pip install --quiet $(TORCH)
	.lock-venv/bin/python -m pip install --quiet -e ".[dev]"
	head -4 $(LOCK) > $(LOCK).new
	.lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip==' | sed 's/+cpu$$//' >> $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv

run: $(STAMP)
	$(BIN)/pinfeed run

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) data artifacts reports
