# Developer commands. Every target builds .venv on first use (Python 3.11) and
# reinstalls the project whenever pyproject.toml changes, so a fresh clone needs
# only Python 3.11 and make.
#
#   make run     everything, on http://127.0.0.1:8000 (PORT=...; see README)
#   make test    the test suite; extra pytest arguments via PYTEST_ARGS="..."
#   make test-browser  WCAG 2.1 AA (axe-core) and screenshots in headless Chromium
#   make lint    ruff format --check and ruff check
#   make bench   the benchmarks (python -m benchmarks), printing their figures

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.primoro-installed

# pytest-xdist workers, each file on one worker (--dist loadfile). Off by default:
# Celery workers started by tests in different files would share one Redis
# database and could take each other's messages.
PYTEST_WORKERS ?= 0
PYTEST_ARGS ?=
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv run test test-browser lint format bench

help:
	@echo "make run | make test [PYTEST_ARGS=...] | make test-browser | make lint | make format | make bench"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) scripts/run.py

# pytest exits 5 when it collected no tests; make treats that as a failure like any other.
test: $(STAMP)
	$(PY) -m pytest $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

# Debian's Chromium (apt-get install chromium) driven by Playwright; screenshots go to
# artifacts/screenshots/. Not part of `make test` (pytest addopts deselect -m browser).
test-browser: $(STAMP)
	$(PY) -m pytest -m browser tests/browser $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) -m benchmarks $(BENCH_ARGS)
