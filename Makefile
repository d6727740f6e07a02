# Lexora: the two commands that matter are `make dev` and `make test`.
.PHONY: dev test test-unit bootstrap lint clean faults soak

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

## The fault suite alone (also part of `make test`), with its per-fault table (docs/reliability.md).
faults: bootstrap
	@rm -f .lexora/fault-results.json; mkdir -p .lexora
	@LEXORA_FAULT_RESULTS=$(CURDIR)/.lexora/fault-results.json $(PY) -m pytest -q tests/faults; \
	status=$$?; PYTHONPATH=tests $(PY) -m faults.report .lexora/fault-results.json; exit $$status

## The fault suite with ten times longer load after each fault and twice the clients.
soak: bootstrap
	@rm -f .lexora/fault-results.json; mkdir -p .lexora
	@LEXORA_SOAK=1 LEXORA_FAULT_RESULTS=$(CURDIR)/.lexora/fault-results.json $(PY) -m pytest -q tests/faults; \
	status=$$?; PYTHONPATH=tests $(PY) -m faults.report .lexora/fault-results.json; exit $$status

test-unit: bootstrap
	@$(PY) -m pytest -q tests/unit

lint: bootstrap
	@$(VENV)/bin/ruff check services operator tests model-repo bench
	@$(VENV)/bin/ruff format --check -q services operator tests model-repo bench

clean:
	rm -rf .lexora .pytest_cache

.PHONY: kind-up deploy images-runtimes

# The version the runtime images are tagged with: the chart's appVersion, which the operator's default
# fetcher image and the samples name (tests/charts/test_image_recipes.py keeps them in step).
VERSION := $(shell sed -n 's/^appVersion: "\(.*\)"$$/\1/p' charts/lexora/Chart.yaml)
RUNTIME_IMAGES := ghcr.io/lexora/model-fetcher:$(VERSION) ghcr.io/lexora/triton-python:$(VERSION)

## Create a local Kubernetes cluster named "lexora" with kind (needs docker and kind).
kind-up:
	@kind get clusters 2>/dev/null | grep -qx lexora || kind create cluster --name lexora --wait 120s
	@kubectl config use-context kind-lexora >/dev/null && echo "kind cluster lexora is up (context kind-lexora)"

## Build every image, load them into the kind cluster and install the chart (needs skaffold, helm, kubectl).
deploy: images-runtimes
	skaffold run -m lexora --kube-context kind-lexora

## Build the images the operator's pods run (model-fetcher, triton-python) and load them into kind.
images-runtimes:
	skaffold build -m runtimes --kube-context kind-lexora
	kind load docker-image --name lexora $(RUNTIME_IMAGES)

.PHONY: bench

## Gateway overhead and throughput side by side with LiteLLM (docs/benchmarks.md); BENCH_QUICK=1: < 5 min.
bench: bootstrap
	@bash bench/setup.sh
	@$(PY) -m bench

.PHONY: bench-routing

## Routing: p50/p99 time to first token over 4 simulated LLM replicas, round robin vs our policy
## (docs/benchmarks.md, "Routing"; ~4.5 min on 2 cores); BENCH_QUICK=1: ~2.5 min.
bench-routing: bootstrap
	@$(PY) -m bench.routing_bench

.PHONY: bench-tracing

## Tracing's cost: the stack with tracing off and on (OTLP sink), side by side (docs/benchmarks.md, "Tracing").
bench-tracing: bootstrap
	@$(PY) -m bench tracing
