# hubmgr: `make run` starts a working dashboard, `make test` runs the whole suite, `make check`
# its fast tier (no registry, browser, server, worker, Redis or PostgreSQL; see docs/testing.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Where `make run` serves hubmgr: make run PORT=8001
PORT ?= 8000

.PHONY: run check test bench install install-dev system-deps system-deps-test clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

system-deps:
	bash scripts/system-deps.sh run

system-deps-test:
	bash scripts/system-deps.sh test

run: system-deps install
	$(PY) manage.py launch --addr 127.0.0.1:$(PORT)

# Tests that need none of these markers (set in tests/conftest.py and by the tests).
FAST := not (registry or browser or live or worker or redis or postgres or slow)

check: install-dev
	HUBMGR_DATABASE_URL= $(PY) -m pytest -q -m "$(FAST)"

test: system-deps-test install-dev
	bash scripts/test.sh

bench: system-deps install-dev
	bash scripts/bench.sh

clean:
	rm -rf $(VENV) .data .pytest_cache test-output
