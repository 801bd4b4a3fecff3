# The two commands of the README: `make run` and `make test`. Each makes .venv itself.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: run test lint format bench audit clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEVSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(STAMP)

run: $(STAMP)  ## Serve the example agents on SQLite with a demo user; prints the URL and token.
	$(BIN)/tenet demo

test: $(DEVSTAMP) lint  ## The whole suite (Postgres/Redis tests run when TENET_TEST_*_URL are set).
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(DEVSTAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(DEVSTAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: $(DEVSTAMP)  ## Measure throughput and latency (see docs/benchmarks.md).
	$(BIN)/tenet bench $(BENCH_ARGS)

audit: $(STAMP)  ## Prove isolation against an in-process server.
	$(BIN)/tenet audit $(AUDIT_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache tenet.db tenet.db-*
