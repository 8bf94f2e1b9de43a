# The two commands: `make run` (the product on this machine) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test install demo bench lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Local Kafka (KRaft), SQLite, API, workers and a simulated fleet with a live status; Ctrl-C stops all.
run: $(STAMP)
	$(BIN)/fleet run

## The whole suite against a real Kafka broker and a real database (DATABASE_URL, else SQLite).
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## A bounded run of everything, ending with one JSON line of counts.
demo: $(STAMP)
	$(BIN)/fleet demo --vehicles 50 --duration 30

## Throughput benchmarks (JSON lines with ratios against baselines measured in the same run).
bench: $(STAMP)
	$(BIN)/python -m loadtest.bench_ingest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy core ingestion simulator loadtest

clean:
	rm -rf $(VENV) var .pytest_cache
