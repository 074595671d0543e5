# Two commands: `make run` and `make test`. Both create .venv if it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/ipc-router serve

test: $(STAMP)
	$(BIN)/python -m pytest --cov --cov-report=term --cov-fail-under=80

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --json benchmarks/last-run.json
	$(BIN)/python -m benchmarks.fanout

clean:
	rm -rf $(VENV) .coverage .pytest_cache
