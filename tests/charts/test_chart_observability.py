"""The chart's Grafana dashboard and Prometheus alerts: opt-in, valid PromQL, and reading only
metrics the services really export (a renamed metric must not leave a panel blank or an alert mute)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
from chart_support import RELEASE, Helm, named, objects_of
from prometheus_client import CollectorRegistry

from lexora_runtime.metrics import create_metrics, export_model_endpoints

METRIC_NAME = re.compile(r"\b(lexora_[a-z_]+)\b")
# What the dashboard must show (issue 26): requests, errors, time to first token, tokens/s, spend,
# the queue and the pods per model; and what the alerts must watch.
DASHBOARD_METRICS = {
    "lexora_requests_total",
    "lexora_request_seconds_bucket",
    "lexora_time_to_first_token_seconds_bucket",
    "lexora_tokens_total",
    "lexora_spend_usd_total",
    "lexora_in_flight_requests",
    "lexora_model_endpoints",
    "lexora_consumer_pending_events",
}
ALERTS = {
    "LexoraHighErrorRate",
    "LexoraSlowFirstToken",
    "LexoraSlowRequests",
    "LexoraModelWithoutReadyReplica",
    "LexoraUsageConsumerLag",
    "LexoraHoldsOutliveTheSweep",
    "LexoraHoldSweeperStalled",
}


def exported_samples() -> set[str]:
    """Every sample name a service process can export (histograms as _bucket/_count/_sum)."""
    metrics = create_metrics("any")
    export_model_endpoints(metrics, list)
    registry: CollectorRegistry = metrics.registry
    names = set()
    for family in registry.collect():
        names.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(family.type, ())
        names.update(family.name + suffix for suffix in suffixes)
    return names


def expressions(renders: dict[str, list[dict]]) -> tuple[list[str], list[tuple[str, str]]]:
    dashboard = named(renders["production"], "ConfigMap", f"{RELEASE}-grafana-dashboard")
    panels = json.loads(dashboard["data"]["lexora.json"])["panels"]
    queries = [target["expr"] for panel in panels for target in panel["targets"]]
    (rule,) = objects_of(renders["production"], "PrometheusRule")
    alerts = [(r["alert"], r["expr"]) for group in rule["spec"]["groups"] for r in group["rules"]]
    return queries, alerts


def test_dashboard_and_alerts_are_opt_in(renders: dict[str, list[dict]]) -> None:
    assert not objects_of(renders["default"], "PrometheusRule")
    assert not [c for c in objects_of(renders["default"], "ConfigMap") if c["metadata"]["name"].endswith("dashboard")]
    dashboard = named(renders["production"], "ConfigMap", f"{RELEASE}-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Lexora"}
    (rule,) = objects_of(renders["production"], "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_every_query_parses_and_reads_only_exported_metrics(renders: dict[str, list[dict]]) -> None:
    queries, alerts = expressions(renders)
    exported = exported_samples()
    for query in [*queries, *(expr for _, expr in alerts)]:
        promql_parser.parse(query)  # raises on invalid PromQL
        unknown = set(METRIC_NAME.findall(query)) - exported
        assert not unknown, f"{query!r} reads metrics no service exports: {unknown}"
    shown = {name for query in queries for name in METRIC_NAME.findall(query)}
    assert shown >= DASHBOARD_METRICS, DASHBOARD_METRICS - shown
    assert {name for name, _ in alerts} == ALERTS


def test_alert_thresholds_come_from_values(helm: Helm, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("prometheusRule: {enabled: true, errorRatio: 0.2, consumerLagEvents: 7}\n")
    objects = helm.template([values])
    (rule,) = objects_of(objects, "PrometheusRule")
    rules = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert rules["LexoraHighErrorRate"]["expr"].rstrip().endswith("> 0.2")
    assert rules["LexoraHighErrorRate"]["annotations"]["summary"].startswith("More than 20% ")
    assert rules["LexoraUsageConsumerLag"]["expr"].endswith("> 7")
    assert "{{ $labels.model }}" in rules["LexoraSlowFirstToken"]["annotations"]["summary"]
