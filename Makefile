# Relay: `make demo` and `make test` work on a fresh machine (they build .venv first).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# gcloud-tasks-emulator pins protobuf<5, which current Google clients refuse: its own venv.
TASKS_EMULATOR_VENV := .venv-tasks-emulator
TASKS_EMULATOR_STAMP := $(TASKS_EMULATOR_VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install tasks-emulator demo dev test test-fast lint typecheck bench bench-gcp check clean

install: $(STAMP) $(TASKS_EMULATOR_STAMP)

tasks-emulator: $(TASKS_EMULATOR_STAMP) ## the Cloud Tasks emulator's own virtualenv

$(TASKS_EMULATOR_STAMP):
	@test -x $(TASKS_EMULATOR_VENV)/bin/python || $(PYTHON) -m venv $(TASKS_EMULATOR_VENV)
	$(TASKS_EMULATOR_VENV)/bin/python -m pip install --quiet 'gcloud-tasks-emulator==0.6.2'
	@touch $@

$(STAMP): pyproject.toml requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet -e '.[dev,gcp,aws]'
	@touch $(STAMP)

demo: install ## the order saga end to end on the embedded backend
	$(BIN)/relay demo

dev: install ## the whole stack locally: API, dispatcher, workers, scheduler
	$(BIN)/relay dev

lint: install
	$(BIN)/ruff check core infra functions tests bench
	$(BIN)/ruff format --check core infra functions tests bench

typecheck: install
	$(BIN)/mypy
	$(BIN)/mypy tests/typing

test: install lint typecheck ## everything CI runs
	$(BIN)/pytest -q -p no:cacheprovider --durations=15

test-fast: install ## unit, contract and SQLite engine tests
	$(BIN)/pytest -q -p no:cacheprovider tests/unit tests/contract tests/engine

bench: install ## benchmarks (not tests): ratios against same-run baselines
	$(BIN)/python -m bench.transitions
	$(BIN)/python -m bench.cold_start

bench-gcp: install ## GCP benchmarks on the Firestore and Cloud Tasks emulators (gcloud, Java)
	$(BIN)/python -m bench.gcp_calls
	$(BIN)/python -m bench.gcp_cold_start

check: test

clean:
	rm -rf $(VENV) $(TASKS_EMULATOR_VENV) .relay .pytest_cache .mypy_cache .ruff_cache
