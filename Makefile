# Lexora: the two commands that matter are `make dev` and `make test`.
.PHONY: dev test test-unit bootstrap lint clean

VENV := .venv
PY := $(VENV)/bin/python

bootstrap:
	@bash scripts/bootstrap.sh

## Bring the whole platform up locally (NATS, embedded Postgres, Triton on CPU, the five services).
dev: bootstrap
	@$(VENV)/bin/lexora dev

## Run the whole test suite against real NATS, Postgres, Triton and the OpenAI SDK.
test: bootstrap lint
	@$(PY) -m pytest -q

test-unit: bootstrap
	@$(PY) -m pytest -q tests/unit

lint: bootstrap
	@$(VENV)/bin/ruff check services operator tests model-repo bench
	@$(VENV)/bin/ruff format --check -q services operator tests model-repo bench

clean:
	rm -rf .lexora .pytest_cache

.PHONY: kind-up deploy

## Create a local Kubernetes cluster named "lexora" with kind (needs docker and kind).
kind-up:
	@kind get clusters 2>/dev/null | grep -qx lexora || kind create cluster --name lexora --wait 120s
	@kubectl config use-context kind-lexora >/dev/null && echo "kind cluster lexora is up (context kind-lexora)"

## Build the images and install the chart into the kind cluster (needs skaffold, helm, kubectl).
deploy:
	skaffold run --kube-context kind-lexora

.PHONY: bench

## Gateway overhead and throughput side by side with LiteLLM (docs/benchmarks.md); BENCH_QUICK=1: < 5 min.
bench: bootstrap
	@bash bench/setup.sh
	@$(PY) -m bench
