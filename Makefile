# Quick start: `make study` runs the default study, `make test` runs the tests.
# Each creates the virtual environment .venv (pip install -e ".[test,inception]") when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lipstudy-installed

.PHONY: study test test-scenarios test-all venv clean-results

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -e ".[test,inception]"
	@touch $(STAMP)

study: $(STAMP)
	$(VENV)/bin/lipstudy run

# `make test`: every test but the whole-study recovery scenarios (signals, outages, full disks,
# servers, clusters: a minute or more each); `make test-scenarios`: those; CI runs both.
test: $(STAMP)
	$(PY) -m pytest -m "not scenario" $(PYTEST_ARGS)

test-scenarios: $(STAMP)
	$(PY) -m pytest -m scenario $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

clean-results:
	rm -rf mlflow.db mlruns lipstudy_results
