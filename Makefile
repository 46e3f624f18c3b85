# bg-platform — two commands for a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
LS_VENV ?= .venv-ls
BIN := $(VENV)/bin
# Re-install only when the dependency files change: the stamp's name is their hash.
DEPS_HASH := $(shell cat requirements.lock pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
STAMP := $(VENV)/.deps-$(DEPS_HASH)
LS_STAMP := $(LS_VENV)/.deps-$(shell sha256sum requirements-labelstudio.txt 2>/dev/null | cut -c1-16)
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := False
export HF_HUB_OFFLINE := 1
export BENTOML_DO_NOT_TRACK := True
export DO_NOT_TRACK := 1
PYTEST_ARGS ?=

.PHONY: setup setup-labelstudio demo test test-unit test-integration lint clean help
help:
	@echo "make demo   - set up .venv and run the whole pipeline on the embedded BG-Synth default"
	@echo "make test   - set up .venv (+ Label Studio venv) and run the whole test suite"

setup: $(STAMP)
$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@rm -f $(VENV)/.deps-*; touch $@
	@echo "setup: $(VENV) ready"

# Label Studio's server pins clash with Airflow's: it lives in its own venv, reached over HTTP only.
setup-labelstudio: $(LS_STAMP)
$(LS_STAMP):
	@test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q -r requirements-labelstudio.txt
	@rm -f $(LS_VENV)/.deps-*; touch $@

demo: setup
	$(BIN)/bgp demo

test: setup setup-labelstudio
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check bg_platform dags bentos tests benchmarks

clean:
	rm -rf $(VENV) $(LS_VENV) .pytest_cache
