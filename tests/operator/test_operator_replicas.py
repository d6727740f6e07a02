"""Per-replica endpoints, weighted rollouts and scale to zero, with the running operator against the
kmock API emulator and a real NATS (the registry, and the routers' ModelDemand announcements).

The tests play the EndpointSlice controller (Cluster.report_slice), the Deployment controller and a
router announcing demand, and assert what the router would read from the registry.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import nats
import pytest
from operator_support import Cluster, eventually, load_sample, pod_ip

from lexora_contracts import subjects
from lexora_contracts.messages import ModelDemand
from lexora_runtime.bus import encode

SMOL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOL = "smollm2-135m-instruct"
CANARY = "smollm2-135m-instruct-canary"
NS = "lexora-models"


@pytest.fixture
def operator_overrides() -> dict[str, Any]:
    return {"idle_check_seconds": 0.3}


async def status_of(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict(((await cluster.get("ModelDeployment", name)) or {}).get("status") or {})


async def record_where(cluster: Cluster, what: str, predicate: Any) -> Any:
    async def check() -> Any:
        record = cluster.record(SMOL_ID)
        return record if record is not None and predicate(record) else None

    return await eventually(check, timeout=20, what=what)


def endpoint_names(record: Any) -> list[str]:
    return sorted(e.name for e in record.endpoints)


async def test_each_ready_pod_is_published_and_a_terminating_one_withdrawn(cluster: Cluster) -> None:
    await cluster.apply(load_sample("smollm2-cpu.yaml"))
    await eventually(lambda: cluster.get("Deployment", SMOL), what="deployment")
    await cluster.report_deployment(SMOL, ready=2, replicas=3)  # pods 0, 1 ready; pod 2 starting

    record = await record_where(cluster, "two pods", lambda r: len(r.endpoints) == 2)
    assert endpoint_names(record) == [f"{NS}/{SMOL}-pod-0", f"{NS}/{SMOL}-pod-1"]
    assert sorted(e.grpc_address for e in record.endpoints) == [f"{pod_ip(SMOL, 0)}:8001", f"{pod_ip(SMOL, 1)}:8001"]
    assert {e.deployment for e in record.endpoints} == {f"{NS}/{SMOL}"}

    # Pod 2 becomes ready, pod 0 starts terminating (scale-in, a rollout, a drained node).
    await cluster.report_slice(
        SMOL,
        [
            (f"{SMOL}-pod-0", pod_ip(SMOL, 0), "terminating"),
            (f"{SMOL}-pod-1", pod_ip(SMOL, 1), "ready"),
            (f"{SMOL}-pod-2", pod_ip(SMOL, 2), "ready"),
        ],
    )
    record = await record_where(cluster, "pod 0 withdrawn", lambda r: f"{NS}/{SMOL}-pod-0" not in endpoint_names(r))
    assert endpoint_names(record) == [f"{NS}/{SMOL}-pod-1", f"{NS}/{SMOL}-pod-2"]

    async def status_endpoints() -> list[str] | None:
        names = sorted(e["name"] for e in (await status_of(cluster, SMOL)).get("endpoints") or [])
        return names if names == [f"{NS}/{SMOL}-pod-1", f"{NS}/{SMOL}-pod-2"] else None

    await eventually(status_endpoints, what="status.endpoints follows the slice")

    # No pod ready: the model stays listed without endpoints (503, never a hang).
    await cluster.report_slice(SMOL, [(f"{SMOL}-pod-1", pod_ip(SMOL, 1), "starting")])
    record = await record_where(cluster, "no endpoint", lambda r: not r.endpoints)
    assert record.status == "pipeline"


def canary_manifest(weight: int) -> dict[str, Any]:
    manifest = load_sample("smollm2-cpu.yaml")
    manifest["metadata"]["name"] = CANARY
    manifest["spec"]["traffic"] = {"weight": weight}
    manifest["spec"]["triton"]["parameters"]["n_threads"] = "1"
    manifest["spec"]["model"]["contextLength"] = 4096  # not published: the oldest sets the catalog
    return manifest


async def test_two_deployments_of_one_model_id_split_by_weight(cluster: Cluster) -> None:
    primary = load_sample("smollm2-cpu.yaml")
    primary["spec"]["traffic"] = {"weight": 90}
    await cluster.apply(primary)
    await eventually(lambda: cluster.get("Deployment", SMOL), what="primary deployment")
    await cluster.report_deployment(SMOL, ready=2)
    await record_where(cluster, "primary serving", lambda r: len(r.endpoints) == 2)

    await cluster.apply(canary_manifest(10))
    await eventually(lambda: cluster.get("Deployment", CANARY), what="canary deployment")
    # Until the canary has a ready replica, the primary takes everything.
    await record_where(cluster, "canary listed", lambda r: len(r.deployments) == 2)

    async def shares(want: dict[str, int]) -> None:
        async def check() -> bool:
            got = {n: (await status_of(cluster, n)).get("traffic", {}).get("share") for n in want}
            return got == want

        await eventually(check, timeout=20, what=f"shares {want}")

    await shares({SMOL: 100, CANARY: 0})

    await cluster.report_deployment(CANARY, ready=1)
    record = await record_where(cluster, "canary serving", lambda r: len(r.endpoints) == 3)
    assert [(d.name, d.weight) for d in record.deployments] == [(SMOL, 90), (CANARY, 10)]
    assert sorted(e.deployment for e in record.endpoints) == [f"{NS}/{SMOL}", f"{NS}/{SMOL}", f"{NS}/{CANARY}"]
    assert record.context_length == 8192
    await shares({SMOL: 90, CANARY: 10})
    traffic = (await status_of(cluster, CANARY))["traffic"]
    assert traffic == {"weight": 10, "share": 10, "deployments": 2}

    # Rebalance: the canary's weight goes up.
    await cluster.patch("ModelDeployment", CANARY, {"spec": {"traffic": {"weight": 90}}})
    await shares({SMOL: 50, CANARY: 50})

    # Deleting the canary removes only its replicas; deleting the last one withdraws the model.
    await cluster.delete("ModelDeployment", CANARY)
    record = await record_where(cluster, "canary gone", lambda r: len(r.deployments) == 1)
    assert {e.deployment for e in record.endpoints} == {f"{NS}/{SMOL}"} and len(record.endpoints) == 2
    await shares({SMOL: 100})
    await cluster.delete("ModelDeployment", SMOL)

    async def withdrawn() -> bool:
        return cluster.record(SMOL_ID) is None

    await eventually(withdrawn, timeout=20, what="model withdrawn with its last ModelDeployment")


async def test_a_younger_deployment_serving_another_triton_model_is_left_out(cluster: Cluster) -> None:
    await cluster.apply(load_sample("smollm2-cpu.yaml"))
    await eventually(lambda: cluster.get("Deployment", SMOL), what="primary deployment")
    await cluster.report_deployment(SMOL, ready=1)
    odd = canary_manifest(10)
    odd["spec"]["triton"]["modelName"] = "another-model"
    await cluster.apply(odd)
    await eventually(lambda: cluster.get("Deployment", CANARY), what="canary deployment")
    await cluster.report_deployment(CANARY, ready=1)

    async def conflict() -> dict[str, Any] | None:
        conditions = (await status_of(cluster, CANARY)).get("conditions") or []
        published = next((c for c in conditions if c["type"] == "Published"), {})
        return published if published.get("reason") == "CatalogConflict" else None

    published = await eventually(conflict, timeout=20, what="CatalogConflict on the younger one")
    assert "Triton model another-model" in published["message"]
    record = cluster.record(SMOL_ID)
    assert record is not None and [d.name for d in record.deployments] == [SMOL]
    assert {e.deployment for e in record.endpoints} == {f"{NS}/{SMOL}"}


def zero_manifest(provider: str, replicas: int = 1, idle_after: int = 300) -> dict[str, Any]:
    manifest = copy.deepcopy(load_sample("smollm2-cpu.yaml"))
    manifest["spec"]["replicas"] = replicas
    manifest["spec"]["autoscaling"] = {
        "provider": provider,
        "minReplicas": 0,
        "maxReplicas": 2,
        "scaleToZeroAfterSeconds": idle_after,
    }
    return manifest


async def announce(nats_url: str, demand: ModelDemand) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.publish(subjects.ROUTER_MODEL_DEMANDED, encode(demand))
        await nc.flush()
    finally:
        await nc.close()


async def test_a_held_request_wakes_a_keda_model_from_zero(cluster: Cluster, nats_url: str) -> None:
    await cluster.apply(zero_manifest("keda", replicas=0))

    async def deployment_replicas(n: int) -> bool:
        deployment = await cluster.get("Deployment", SMOL)
        return deployment is not None and deployment["spec"].get("replicas") == n

    await eventually(lambda: deployment_replicas(0), what="Deployment at zero")
    record = await record_where(cluster, "listed, waking on request", lambda r: r.wakes_on_request)
    assert record.endpoints == []

    async def scaled_to_zero() -> bool:
        status = await status_of(cluster, SMOL)
        ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        return status.get("phase") == "Pending" and ready.get("reason") == "ScaledToZero"

    await eventually(scaled_to_zero, what="Pending, ScaledToZero")

    # A router holds a request for the model and announces it (every ~2 s while it waits).
    async def woken() -> bool:
        await announce(nats_url, ModelDemand(model_id=SMOL_ID, waiting=1, running=0, at=0.0, observer="test"))
        md = await cluster.get("ModelDeployment", SMOL)
        return md["spec"]["replicas"] == 1

    await eventually(woken, timeout=20, what="spec.replicas 1 on demand")
    await eventually(lambda: deployment_replicas(1), what="Deployment at one")


async def test_a_held_request_wakes_an_hpa_model_from_zero(cluster: Cluster, nats_url: str) -> None:
    await cluster.apply(zero_manifest("hpa"))
    hpa = await eventually(lambda: cluster.get("HorizontalPodAutoscaler", SMOL), what="HPA")
    assert hpa["spec"]["minReplicas"] == 1  # the HPA idles at zero; the operator takes it there and back
    await cluster.patch("Deployment", SMOL, {"spec": {"replicas": 0}})

    async def woken() -> bool:
        await announce(nats_url, ModelDemand(model_id=SMOL_ID, waiting=2, running=0, at=0.0, observer="test"))
        deployment = await cluster.get("Deployment", SMOL)
        return deployment["spec"].get("replicas") == 1

    await eventually(woken, timeout=20, what="Deployment scaled to 1 on demand")


async def test_an_idle_model_scales_to_zero_unless_it_is_in_use(cluster: Cluster, nats_url: str) -> None:
    await cluster.apply(zero_manifest("keda", replicas=1, idle_after=3))
    await eventually(lambda: cluster.get("Deployment", SMOL), what="deployment")
    await cluster.report_deployment(SMOL, ready=1)

    # A router serving the model says so (running > 0, every ~10 s in production): it stays up.
    in_use = ModelDemand(model_id=SMOL_ID, waiting=0, running=1, at=0.0, observer="test")
    for _ in range(10):
        await announce(nats_url, in_use)
        await asyncio.sleep(0.5)
    md = await cluster.get("ModelDeployment", SMOL)
    assert md["spec"]["replicas"] == 1

    async def at_zero() -> bool:
        return (await cluster.get("ModelDeployment", SMOL))["spec"]["replicas"] == 0

    await eventually(at_zero, timeout=30, what="scaled to zero once idle")


async def test_zero_replicas_without_autoscaling_is_listed_not_failed(cluster: Cluster) -> None:
    manifest = load_sample("smollm2-cpu.yaml")
    manifest["spec"]["replicas"] = 0
    await cluster.apply(manifest)
    deployment = await eventually(lambda: cluster.get("Deployment", SMOL), what="deployment")
    assert deployment["spec"]["replicas"] == 0
    await cluster.report_deployment(SMOL, ready=0, replicas=0)

    async def pending() -> dict[str, Any] | None:
        status = await status_of(cluster, SMOL)
        return status if status.get("phase") == "Pending" else None

    status = await eventually(pending, what="Pending")
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["reason"] == "ScaledToZero"
    record = await record_where(cluster, "listed", lambda r: True)
    assert record.endpoints == [] and not record.wakes_on_request
