"""A model's replicas as the registry publishes them, from the EndpointSlices of its Service. Pure.

The EndpointSlice controller keeps one or more slices per Service (label
`kubernetes.io/service-name`), an entry per pod with its own IP and conditions. Every address that
is ready and not terminating becomes its own registry Endpoint, so the router balances across pods
itself (gRPC connections through a ClusterIP stick to one pod). A pod that starts terminating, or
fails its readiness probe, is left out at once: the slice changes before the pod stops serving.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lexora_contracts.registry import Endpoint

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SLICE_API_VERSION = "discovery.k8s.io/v1"


def serving_address(endpoint: Mapping[str, Any]) -> bool:
    """Ready and not terminating. `ready` unset means ready (the API's own reading); a terminating
    pod is out even where the controller still says ready (publishNotReadyAddresses)."""
    conditions = endpoint.get("conditions") or {}
    return conditions.get("ready") is not False and not conditions.get("terminating")


def slice_endpoints(slices: Iterable[Mapping[str, Any]], namespace: str, deployment: str) -> list[Endpoint]:
    """An Endpoint per serving address of these slices (one Service's), sorted by name.

    `deployment` is the ModelDeployment's key, "namespace/name". Addresses come from the slice's
    ports named grpc, http and metrics (the Service's port names); a slice without a grpc port
    (not yet filled in) gives nothing."""
    found: dict[str, Endpoint] = {}
    for item in slices:
        if item.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
            continue
        ports = {p.get("name"): p.get("port") for p in item.get("ports") or [] if p.get("port")}
        if "grpc" not in ports:
            continue
        for entry in item.get("endpoints") or []:
            addresses = entry.get("addresses") or []
            if not addresses or not serving_address(entry):
                continue
            ip = addresses[0]
            host = f"[{ip}]" if ":" in ip else ip
            pod = (entry.get("targetRef") or {}).get("name") or ip
            name = f"{namespace}/{pod}"
            found[name] = Endpoint(
                name=name,
                grpc_address=f"{host}:{ports['grpc']}",
                http_address=f"{host}:{ports['http']}" if "http" in ports else None,
                metrics_address=f"{host}:{ports['metrics']}" if "metrics" in ports else None,
                deployment=deployment,
            )
    return [found[name] for name in sorted(found)]
