"""Pure parts of per-replica routing, weighted rollouts and scale to zero: EndpointSlices ->
endpoints, several ModelDeployments of one id -> one record and their shares, the idle clock."""

from __future__ import annotations

from typing import Any

import pytest
from operator_support import load_sample

from lexora_contracts.messages import ModelDemand
from lexora_operator.autoscaling import render_hpa, render_scaled_object
from lexora_operator.endpoints import slice_endpoints
from lexora_operator.registry import Member
from lexora_operator.rollout import plan_rollout, shares
from lexora_operator.spec import parse_spec
from lexora_operator.wake import DemandClock, is_idle

NS = "lexora-models"
PORTS = [{"name": "http", "port": 8000}, {"name": "grpc", "port": 8001}, {"name": "metrics", "port": 8002}]


def _entry(ip: str, pod: str | None, **conditions: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"addresses": [ip], "conditions": conditions}
    if pod:
        entry["targetRef"] = {"kind": "Pod", "name": pod}
    return entry


def _slice(*entries: dict[str, Any], ports: list[dict[str, Any]] = PORTS, family: str = "IPv4") -> dict[str, Any]:
    return {"addressType": family, "ports": ports, "endpoints": list(entries)}


def test_every_ready_pod_is_an_endpoint_with_its_own_addresses() -> None:
    slices = [
        _slice(_entry("10.1.0.7", "m-abc-2", ready=True), _entry("10.1.0.5", "m-abc-1", ready=True)),
        _slice(_entry("10.1.0.9", "m-abc-3", ready=True, terminating=False)),
    ]
    endpoints = slice_endpoints(slices, NS, f"{NS}/m")
    assert [e.name for e in endpoints] == [f"{NS}/m-abc-1", f"{NS}/m-abc-2", f"{NS}/m-abc-3"]
    first = endpoints[0]
    assert (first.grpc_address, first.http_address, first.metrics_address) == (
        "10.1.0.5:8001",
        "10.1.0.5:8000",
        "10.1.0.5:8002",
    )
    assert first.deployment == f"{NS}/m" and first.ready


def test_not_ready_and_terminating_pods_are_left_out() -> None:
    slices = [
        _slice(
            _entry("10.1.0.5", "starting", ready=False),
            _entry("10.1.0.6", "draining", ready=True, serving=True, terminating=True),
            _entry("10.1.0.7", "unknown"),  # ready unset reads as ready (the API's own rule)
        )
    ]
    assert [e.name for e in slice_endpoints(slices, NS, f"{NS}/m")] == [f"{NS}/unknown"]


def test_an_address_without_a_pod_is_named_by_its_ip_and_ipv6_is_bracketed() -> None:
    (endpoint,) = slice_endpoints([_slice(_entry("fd00::5", None, ready=True), family="IPv6")], NS, f"{NS}/m")
    assert endpoint.name == f"{NS}/fd00::5"
    assert endpoint.grpc_address == "[fd00::5]:8001"


def test_a_slice_without_ports_or_of_fqdns_gives_nothing() -> None:
    assert slice_endpoints([_slice(_entry("10.1.0.5", "p", ready=True), ports=[])], NS, f"{NS}/m") == []
    assert slice_endpoints([_slice(_entry("a.example", "p", ready=True), family="FQDN")], NS, f"{NS}/m") == []


def _member(name: str, created: str, weight: int = 100, pods: int = 1, **spec: Any) -> Member:
    manifest = load_sample("smollm2-cpu.yaml")
    body = {**manifest["spec"], "traffic": {"weight": weight}, **spec}
    endpoints = slice_endpoints(
        [_slice(*(_entry(f"10.2.0.{i}", f"{name}-{i}", ready=True) for i in range(pods)))], NS, f"{NS}/{name}"
    )
    return Member(name, NS, parse_spec(name, body), created, tuple(endpoints))


def test_a_canary_takes_its_weighted_share_of_one_merged_record() -> None:
    primary = _member("primary", "2026-12-01T00:00:00Z", weight=90, pods=2)
    canary = _member("canary", "2026-12-02T00:00:00Z", weight=10)
    rollout = plan_rollout([canary, primary])
    record = rollout.record
    assert record is not None
    assert [(d.name, d.weight) for d in record.deployments] == [("primary", 90), ("canary", 10)]
    assert sorted(e.deployment for e in record.endpoints) == [f"{NS}/canary", f"{NS}/primary", f"{NS}/primary"]
    assert {k: (v.share, v.deployments) for k, v in rollout.members.items()} == {
        f"{NS}/primary": (90, 2),
        f"{NS}/canary": (10, 2),
    }


def test_shares_count_only_deployments_with_a_ready_replica() -> None:
    primary = _member("primary", "2026-12-01T00:00:00Z", weight=90, pods=0)
    canary = _member("canary", "2026-12-02T00:00:00Z", weight=10)
    assert shares([primary, canary]) == {f"{NS}/primary": 0, f"{NS}/canary": 100}
    assert shares([_member("a", "1", pods=0)]) == {f"{NS}/a": 0}
    # Weights all 0: the ready ones split it evenly.
    assert shares([_member("a", "1", weight=0), _member("b", "2", weight=0)]) == {f"{NS}/a": 50, f"{NS}/b": 50}


def test_ties_in_age_are_broken_by_name_and_the_oldest_sets_the_catalog() -> None:
    a = _member("a", "2026-12-01T00:00:00Z", model={**load_sample("smollm2-cpu.yaml")["spec"]["model"]})
    b = _member(
        "b",
        "2026-12-01T00:00:00Z",
        model={**load_sample("smollm2-cpu.yaml")["spec"]["model"], "pricing": {"inputPerMTok": "9"}},
    )
    record = plan_rollout([b, a]).record
    assert record is not None and record.pricing.input_micro_per_mtok == 40_000
    assert [d.name for d in record.deployments] == ["a", "b"]


def test_a_younger_deployment_of_another_triton_model_is_left_out() -> None:
    primary = _member("primary", "2026-12-01T00:00:00Z")
    other = _member("other", "2026-12-02T00:00:00Z", triton={"image": "x", "modelName": "something-else"})
    rollout = plan_rollout([primary, other])
    assert rollout.record is not None
    assert [d.name for d in rollout.record.deployments] == ["primary"]
    assert all(e.deployment == f"{NS}/primary" for e in rollout.record.endpoints)
    conflict = rollout.members[f"{NS}/other"].conflict
    assert conflict is not None and "Triton model something-else" in conflict and f"{NS}/primary" in conflict
    assert rollout.members[f"{NS}/other"].share == 0
    assert rollout.members[f"{NS}/primary"].share == 100


def test_no_deployment_left_means_withdraw() -> None:
    assert plan_rollout([]).record is None


def _scaling(provider: str, minimum: int) -> Any:
    manifest = load_sample("smollm2-cpu.yaml")
    autoscaling = {"provider": provider, "minReplicas": minimum, "maxReplicas": 3, "scaleToZeroAfterSeconds": 60}
    return parse_spec("m", {**manifest["spec"], "autoscaling": autoscaling})


def test_zero_minimum_keeps_the_hpa_at_one_and_lets_keda_reach_zero() -> None:
    assert render_hpa("m", NS, _scaling("hpa", 0), {})["spec"]["minReplicas"] == 1
    assert render_hpa("m", NS, _scaling("hpa", 2), {})["spec"]["minReplicas"] == 2
    keda = render_scaled_object("m", NS, _scaling("keda", 0), {}, "http://prometheus:9090")
    assert keda["spec"]["minReplicaCount"] == 0
    assert _scaling("keda", 0).scales_from_zero and not _scaling("keda", 1).scales_from_zero


def _demand(model: str, waiting: int = 0, running: int = 0) -> ModelDemand:
    return ModelDemand(model_id=model, waiting=waiting, running=running, at=0.0)


@pytest.mark.parametrize(("heard", "idle"), [(None, True), (_demand("x", running=1), False), (_demand("x"), True)])
def test_idle_after_the_configured_time_without_demand(heard: ModelDemand | None, idle: bool) -> None:
    spec = _scaling("keda", 0)
    clock = DemandClock(started=1000.0)
    if heard is not None:
        clock.heard(heard.model_copy(update={"model_id": spec.model.id}), 1030.0)
    assert not is_idle(spec, clock, 1059.0)
    assert is_idle(spec, clock, 1061.0) is idle
    assert is_idle(spec, clock, 1091.0)
    assert not is_idle(_scaling("keda", 1), clock, 5000.0)  # never for a model that does not scale to zero
