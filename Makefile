# `make run` starts the router and `make test` runs the suite. Each creates .venv if it
# is missing and installs what it needs: `run` and `cluster` only the router's
# extra, so that a first `make run` is quick; `test`, `lint`, `bench` and `install` everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ROUTER_STAMP := $(VENV)/.installed-router
STAMP := $(VENV)/.installed

.PHONY: run cluster test lint bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(ROUTER_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[router]'
	touch $@

# Everything includes the router's extra: its stamp is fresh too.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[router,bench,test,lint]'
	touch $@ $(ROUTER_STAMP)

install: $(STAMP)

run: $(ROUTER_STAMP)
	$(BIN)/ipc-router serve

# Three nats-servers and three routers on loopback until Ctrl-C (docs/cluster.md).
cluster: $(ROUTER_STAMP)
	$(BIN)/python -m actors.local_cluster

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
