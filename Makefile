# Two commands: `make run` and `make test`. Both create .venv if it is missing and
# install what they need: the router's extra for `run`; everything for the rest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[router,bench,test,lint]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/ipc-router serve

test: $(STAMP)
	$(BIN)/python -m pytest --cov --cov-report=term --cov-fail-under=80

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --json benchmarks/last-run.json
	$(BIN)/python -m benchmarks.fanout
	$(BIN)/python -m benchmarks.failover --json benchmarks/failover-last-run.json

clean:
	rm -rf $(VENV) .coverage .pytest_cache .mypy_cache .ruff_cache
