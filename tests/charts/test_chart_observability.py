"""The chart's Grafana dashboard and Prometheus alerts: opt-in, valid PromQL, and reading only
metrics the services really export (a renamed metric must not leave a panel blank or an alert mute)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
import yaml
from chart_support import RELEASE, Helm, named, objects_of
from prometheus_client import CollectorRegistry

from lexora_operator.autoscaling import engine_query, router_query
from lexora_operator.render import labels as triton_labels
from lexora_operator.spec import ROUTER_PENDING_METRIC, TRTLLM_WAITING_METRIC
from lexora_runtime.metrics import create_metrics, export_model_endpoints, export_pending_requests

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
    export_pending_requests(metrics, list, {})
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


def adapter_config(objects: list[dict]) -> dict:
    rules = named(objects, "ConfigMap", f"{RELEASE}-prometheus-adapter-rules")
    return yaml.safe_load(rules["data"]["config.yaml"])


def as_promql(template: str) -> str:
    """prometheus-adapter's query template filled in as the adapter fills it for one object."""
    return (
        template.replace("<<.Series>>", "metric")
        .replace("<<.LabelMatchers>>", 'namespace="models"')
        .replace("<<.GroupBy>>", "pod")
    )


def test_autoscaling_metrics_are_opt_in(renders: dict[str, list[dict]]) -> None:
    assert not objects_of(renders["default"], "PodMonitor")
    names = [c["metadata"]["name"] for c in objects_of(renders["default"], "ConfigMap")]
    assert f"{RELEASE}-prometheus-adapter-rules" not in names


def test_prometheus_adapter_serves_what_the_operators_hpa_reads(renders: dict[str, list[dict]]) -> None:
    config = adapter_config(renders["production"])
    (external,) = config["externalRules"]
    (pods,) = config["rules"]
    # The names the operator's HPA asks for (lexora_operator.autoscaling.render_hpa).
    assert external["name"]["as"] == ROUTER_PENDING_METRIC
    assert pods["name"]["as"] == TRTLLM_WAITING_METRIC
    # Its selector is model_deployment; the namespace is the ModelDeployment's, not the router's.
    assert external["resources"]["overrides"] == {"model_namespace": {"resource": "namespace"}}
    assert "by (model_deployment)" in external["metricsQuery"]
    assert pods["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    exported = exported_samples()
    for rule in (external, pods):
        promql_parser.parse(rule["seriesQuery"])
        promql_parser.parse(as_promql(rule["metricsQuery"]))
        assert set(METRIC_NAME.findall(rule["seriesQuery"])) <= exported
    assert 'request_type="waiting"' in pods["seriesQuery"]


def test_the_operators_keda_queries_read_exported_metrics() -> None:
    router = router_query("model-a", "models")
    promql_parser.parse(router)
    promql_parser.parse(engine_query("model-a", "models"))
    assert set(METRIC_NAME.findall(router)) == {ROUTER_PENDING_METRIC} <= exported_samples()


def test_the_pod_monitor_scrapes_the_triton_pods_the_operator_runs(renders: dict[str, list[dict]]) -> None:
    (monitor,) = objects_of(renders["production"], "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= triton_labels("any-model").items()
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]


def test_the_operator_knows_where_keda_queries_prometheus(renders: dict[str, list[dict]]) -> None:
    operator = named(renders["default"], "Deployment", f"{RELEASE}-operator")
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LEXORA_PROMETHEUS_ADDRESS"] == "http://prometheus-operated.monitoring.svc:9090"
