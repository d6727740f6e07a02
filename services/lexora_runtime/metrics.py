"""Prometheus metrics shared by the services. Each service process owns its own registry."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric

from lexora_contracts.registry import ModelRecord

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass
class ServiceMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    tokens: Counter
    # What the dashboard and the alerts of charts/lexora (files/grafana, PrometheusRule) read beyond
    # the three above; each service sets those that are its business (docs/kubernetes.md, "Dashboard
    # and alerts").
    first_token: Histogram  # router: from the gateway's receipt of a request to its first output
    in_flight: Gauge  # router: jobs running per model
    spend: Counter  # router: what the served requests cost, in USD
    consumer_pending: Gauge  # billing, usage: usage events waiting for their consumer
    holds_released: Counter  # billing: holds the sweeper released (their request never settled)
    oldest_overdue_hold: Gauge  # billing: seconds the oldest hold has outlived its expiry (0: none)
    last_sweep: Gauge  # billing: when the sweeper last finished a pass (unix time)


def create_metrics(service: str) -> ServiceMetrics:
    registry = CollectorRegistry()
    return ServiceMetrics(
        registry=registry,
        requests=Counter("lexora_requests", "Requests handled", ["service", "operation", "outcome"], registry=registry),
        latency=Histogram(
            "lexora_request_seconds",
            "Time to handle a request",
            ["service", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        tokens=Counter("lexora_tokens", "Tokens processed", ["service", "model", "direction"], registry=registry),
        first_token=Histogram(
            "lexora_time_to_first_token_seconds",
            "From the gateway's receipt of a request to the engine's first output",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        in_flight=Gauge("lexora_in_flight_requests", "Jobs running on the engines", ["model"], registry=registry),
        spend=Counter("lexora_spend_usd", "What the served requests cost", ["model"], registry=registry),
        consumer_pending=Gauge(
            "lexora_consumer_pending_events", "Usage events waiting for the consumer", ["consumer"], registry=registry
        ),
        holds_released=Counter(
            "lexora_holds_released_by_sweeper",
            "Credit holds released because their request never settled",
            registry=registry,
        ),
        oldest_overdue_hold=Gauge(
            "lexora_oldest_overdue_hold_seconds", "How long the oldest hold has outlived its expiry", registry=registry
        ),
        last_sweep=Gauge(
            "lexora_last_hold_sweep_timestamp_seconds", "When the hold sweeper last finished", registry=registry
        ),
    )


def serve_metrics(metrics: ServiceMetrics, host: str, port: int) -> None:
    if port:
        start_http_server(port, addr=host, registry=metrics.registry)


class _ModelEndpoints:
    """`lexora_model_endpoints{model, state}`, read from the registry at each scrape: the endpoints
    whose deployment says ready (`deployed`) and those of them that serve (`ready`)."""

    def __init__(self, records: Callable[[], Iterable[ModelRecord]]):
        self._records = records

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "lexora_model_endpoints", "Endpoints of each model, deployed and ready to serve", labels=["model", "state"]
        )
        for record in self._records():
            family.add_metric([record.id, "deployed"], len(record.deployed_endpoints))
            family.add_metric([record.id, "ready"], len(record.ready_endpoints))
        yield family


def export_model_endpoints(metrics: ServiceMetrics, records: Callable[[], Iterable[ModelRecord]]) -> None:
    metrics.registry.register(_ModelEndpoints(records))


class _PendingRequests:
    """`lexora_pending_requests{model, model_deployment, model_namespace}`: the requests this router
    holds for each model, labelled with a ModelDeployment that serves it so an autoscaler can
    select them for that ModelDeployment (docs/operator.md, "Autoscaling"): a request waiting for a
    replica (a model woken from zero) counts under the model's first ModelDeployment, one running
    under the ModelDeployment of the endpoint that took it. Every ModelDeployment of every
    published model is exported, at 0 when idle, so the autoscaler always has a value to read."""

    def __init__(self, records: Callable[[], Iterable[ModelRecord]], pending: Mapping[tuple[str, str], int]):
        self._records = records
        self._pending = pending

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "lexora_pending_requests",
            "Requests the router holds for a model, by the ModelDeployment that serves them",
            labels=["model", "model_deployment", "model_namespace"],
        )
        exported: set[tuple[str, str]] = set()
        for record in self._records():
            for where in record.deployments or [None]:
                key = (record.id, where.key if where else "")
                exported.add(key)
                labels = [record.id, where.name if where else "", where.namespace if where else ""]
                family.add_metric(labels, self._pending.get(key, 0))
        for (model, deployment), count in sorted(self._pending.items()):
            if (model, deployment) not in exported and count:  # withdrawn while its requests still run
                namespace, _, name = deployment.rpartition("/")
                family.add_metric([model, name, namespace], count)
        yield family


def export_pending_requests(
    metrics: ServiceMetrics, records: Callable[[], Iterable[ModelRecord]], pending: Mapping[tuple[str, str], int]
) -> None:
    """`pending`: the requests held by (model id, ModelDeployment key "namespace/name" or ""), kept
    by the router as they start, move to an endpoint, and end."""
    metrics.registry.register(_PendingRequests(records, pending))
