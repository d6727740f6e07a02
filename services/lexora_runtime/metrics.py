"""Prometheus metrics shared by the services. Each service process owns its own registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass
class ServiceMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    tokens: Counter


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
    )


def serve_metrics(metrics: ServiceMetrics, host: str, port: int) -> None:
    if port:
        start_http_server(port, addr=host, registry=metrics.registry)
