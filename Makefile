# The README's two commands: `make demo` and `make test`. Each installs what it needs itself
# (Debian packages through tools/install-system-deps.sh, Python packages into .venv, the JS
# validator into node_modules), so both work on a fresh Debian machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.package-lock.json
EXTRAS ?= edge,server,train,dev
# Exact versions for every install (see its header); `make constraints` regenerates it.
CONSTRAINTS := constraints.txt
# Wheels of the edge install, so tests/test_packaging.py builds a fresh edge venv offline.
WHEELHOUSE := .cache/wheelhouse/edge
WHEELHOUSE_STAMP := $(WHEELHOUSE)/.complete
CHECKOV_VENV := .cache/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: help test demo check lint typecheck contracts pytest setup system-deps venv constraints \
	wheelhouse checkov-venv asyncapi schemas chart-schema edge-size clean

help:
	@echo "make demo   - the fleet on embedded defaults: MLflow registers models/default, the fleet"
	@echo "              publishes it, three devices read looped drives into the dashboard"
	@echo "make test   - ruff, mypy, import contracts and pytest with coverage (what CI runs)"
	@echo "make asyncapi / make schemas - regenerate docs/asyncapi.yaml / the profile JSON schema"
	@echo "make chart-schema - regenerate the Helm chart's values.schema.json"
	@echo "make setup  - fetch what make test needs (after it, make test runs without a network)"
	@echo "make constraints - freeze .venv into constraints.txt, the versions every install uses"

system-deps:
	bash tools/install-system-deps.sh

$(PY_STAMP): pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	touch $@

venv: $(PY_STAMP)

# Freeze the working venv into the constraints file, keeping its header.
constraints: $(PY_STAMP)
	{ sed -n '/^#/p' $(CONSTRAINTS); $(BIN)/python -m pip freeze --all --exclude-editable; } \
		> $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

# The edge extra's wheels at the constrained versions, and setuptools to build this project from
# them: tests/test_packaging.py installs with --no-index from here. Built while online.
$(WHEELHOUSE_STAMP): pyproject.toml $(CONSTRAINTS) | $(PY_STAMP)
	rm -rf $(WHEELHOUSE)
	$(BIN)/python -m pip wheel --quiet -c $(CONSTRAINTS) --wheel-dir $(WHEELHOUSE) \
		'.[edge]' 'setuptools>=77'
	rm -f $(WHEELHOUSE)/roadsign_fleet-*.whl
	touch $@

wheelhouse: $(WHEELHOUSE_STAMP)

# checkov in a venv of its own (tools/checkov-requirements.txt says why), for tests/k3s/test_checkov.py.
$(CHECKOV_STAMP): tools/checkov-requirements.txt
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-r tools/checkov-requirements.txt
	touch $@

checkov-venv: $(CHECKOV_STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(PY_STAMP)
	$(BIN)/mypy

contracts: $(PY_STAMP)
	$(BIN)/lint-imports --no-cache

# pytest exits 5 when it collects nothing: a suite that tests nothing is a failure, not a pass.
# Two workers (pytest-xdist): most tests wait on the real servers and processes they start, so two
# run in about three quarters of the time of one, on two cores. PYTEST_WORKERS=0 runs in-process.
PYTEST_WORKERS ?= 2
pytest: $(PY_STAMP) $(NODE_STAMP) $(WHEELHOUSE_STAMP) $(CHECKOV_STAMP)
	rc=0; $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --cov --cov-report=term-missing || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc

check: lint typecheck contracts pytest

# Everything `make test` fetches from the network. After it, `make test` runs with none (.ci/run
# proves that in a network namespace that has only loopback).
setup: system-deps $(PY_STAMP) $(NODE_STAMP) $(WHEELHOUSE_STAMP) $(CHECKOV_STAMP)

test: system-deps
	$(MAKE) check

# Mosquitto, the fleet server (SQLite) and an ingestion worker; a device enrolled through the API
# runs the agent with models/default on a rendered drive; its readings are read back from the API.
demo: system-deps $(PY_STAMP)
	$(BIN)/python tools/demo.py

asyncapi: $(PY_STAMP)
	$(BIN)/python -m fleet_protocol.asyncapi --output docs/asyncapi.yaml

schemas: $(PY_STAMP)
	$(BIN)/roadsign-agent config-schema > firmware_configs/device-profile.schema.json

# The Helm chart's values.schema.json: values.yaml's keys plus the server's settings schema.
chart-schema: $(PY_STAMP)
	$(BIN)/python tools/chart_values_schema.py

# Size of a fresh edge-only install, as quoted in the README.
edge-size:
	rm -rf .cache/edge-size && $(PYTHON) -m venv .cache/edge-size
	.cache/edge-size/bin/python -m pip install --quiet -c $(CONSTRAINTS) '.[edge]'
	du -sh .cache/edge-size

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache .coverage htmlcov \
		$(WHEELHOUSE) $(CHECKOV_VENV)
