# The two commands: `make run` (the product on this machine) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test install demo bench lint clean loadtest helm-check

# rustup installs cargo here; the native decoder (native/) is built by `pip install`.
export PATH := $(HOME)/.cargo/bin:$(PATH)

$(STAMP): pyproject.toml native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)
	@command -v cargo >/dev/null || { echo "cargo (Rust) is needed to build native/:" \
		"install it with rustup (https://rustup.rs)" >&2; exit 1; }
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
	$(BIN)/python -m loadtest.bench_all

## Locust load test: a seeded local stack, mixed users for about 60 s; fails on loadtest/thresholds.py.
loadtest: $(STAMP)
	$(BIN)/python -m loadtest.run_locust --seconds 60 --users 50 --spawn-rate 10

## The Helm chart, checked offline (helm is built with go install and cached on the first run).
helm-check: $(STAMP)
	bash helm/check.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy console core ingestion diagnostics services ota ubi simulator loadtest

clean:
	rm -rf $(VENV) var .pytest_cache
