"""The operator watching one namespace (LEXORA_WATCH_NAMESPACE, the chart's operator.watchNamespace):
ModelDeployments elsewhere are left alone, and its NetworkPolicies admit the router of its settings."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from operator_support import NAMESPACE, RESYNC_SECONDS, Cluster, eventually, load_sample

FLUX = "flux-1-schnell"
ROUTER_LABELS = {"app.kubernetes.io/name": "lexora", "app.kubernetes.io/instance": "edge", "team": "inference"}


@pytest.fixture
def operator_overrides() -> dict[str, Any]:
    return {"watch_namespace": NAMESPACE, "router_namespace": "lexora-edge", "router_pod_labels": ROUTER_LABELS}


async def test_only_the_watched_namespace_is_reconciled(cluster: Cluster) -> None:
    await cluster.apply(load_sample("flux-1-schnell.yaml"), namespace="elsewhere")
    await cluster.apply(load_sample("flux-1-schnell.yaml"))

    await eventually(lambda: cluster.get("Deployment", FLUX), what="the watched namespace's Deployment")
    await asyncio.sleep(2 * RESYNC_SECONDS)
    assert await cluster.get("Deployment", FLUX, namespace="elsewhere") is None
    ignored = await cluster.get("ModelDeployment", FLUX, namespace="elsewhere")
    assert not ignored.get("status") and not ignored["metadata"].get("finalizers")


async def test_the_network_policy_admits_the_configured_router(cluster: Cluster) -> None:
    await cluster.apply(load_sample("flux-1-schnell.yaml"))
    policy = await eventually(lambda: cluster.get("NetworkPolicy", FLUX), what="NetworkPolicy")
    (router,) = policy["spec"]["ingress"][0]["from"]
    assert router == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "lexora-edge"}},
        "podSelector": {"matchLabels": ROUTER_LABELS},
    }
