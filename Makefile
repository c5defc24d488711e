# The two commands of the README: `make demo` and `make test`.
# Both set up a virtual environment from pyproject.toml on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo up test lint bench bench-quick bench-replication bench-elections fault fault-cluster

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/midcall demo

up: $(STAMP)
	$(BIN)/midcall up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q --durations=20 -n 2 --dist loadfile

# One table: Midcall against a direct HTTP call and two task queues, and the targets
# (see bench/run.py); about 4 minutes.
bench: $(STAMP)
	$(BIN)/python -m bench.run

# The same table with fewer calls, in about 2 minutes.
bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

# A confirmed JetStream publish at R1 and R3 (one server, a 3-node cluster); about a minute.
bench-replication: $(STAMP)
	$(BIN)/python -m bench.replication

# How soon a publish waiting on a stream's election goes on, following JetStream's
# election advisories (as the services do) and not: a 3-node cluster, leaders killed.
bench-elections: $(STAMP)
	$(BIN)/python -m bench.elections

# The fault test at full size: 2,000 calls at 50/s while every process is killed in turn.
fault: $(STAMP)
	$(BIN)/python -m bench.fault

# The cluster fault test at full size: 50 calls/s for about 100 s on a 3-node R3 cluster
# while leaders die, a node is cut off and one loses its disk (needs PostgreSQL:
# --postgres URL, by default the local server's test database).
fault-cluster: $(STAMP)
	$(BIN)/python -m bench.fault_cluster
