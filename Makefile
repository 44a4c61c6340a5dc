# Crossway — the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run test check lint typecheck install lock bench clean node-deps

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[test]'
	# xds-protos bundles an older copy of opentelemetry-proto's modules, and whichever of the two
	# is installed last owns those files: opentelemetry-proto's own (newer) ones must win.
	$(PIP) install -q --no-deps --force-reinstall -c constraints.txt opentelemetry-proto
	touch $(STAMP)

install: $(STAMP)

## Start Crossway with the quickstart config and local sample upstreams (offline, no keys).
run: install
	$(PY) -m crossway.quickstart

## Lint, type-check and run the whole test suite.
test: install node-deps check
	$(PY) -m pytest -q

check: lint typecheck

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: install
	$(VENV)/bin/mypy

node-deps:
	@if [ -f tests/node/package.json ]; then cd tests/node && npm ci --no-audit --no-fund --silent; fi

## Re-pin every installed package after a dependency change in pyproject.toml.
lock:
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -e '.[test]'
	$(PIP) freeze --exclude-editable | grep -v '^-e' > constraints.txt

bench: install
	bash bench/run.sh

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
