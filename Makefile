# Lexora: the two commands that matter are `make dev` and `make test`.
.PHONY: dev test test-unit bootstrap lint clean

VENV := .venv
PY := $(VENV)/bin/python

bootstrap:
	@bash scripts/bootstrap.sh

## Bring the whole platform up locally (NATS, SQLite, Triton on CPU, the five services).
dev: bootstrap
	@$(VENV)/bin/lexora dev

## Run the whole test suite against real NATS, Postgres, Triton and the OpenAI SDK.
test: bootstrap lint
	@$(PY) -m pytest -q

test-unit: bootstrap
	@$(PY) -m pytest -q tests/unit

lint: bootstrap
	@$(VENV)/bin/ruff check services tests model-repo
	@$(VENV)/bin/ruff format --check -q services tests model-repo

clean:
	rm -rf .lexora .pytest_cache
