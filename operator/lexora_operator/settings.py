"""Operator settings from the environment (LEXORA_ prefix), built in main(), never at import."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from lexora_operator.render import DEFAULT_PROMETHEUS_ADDRESS, DEFAULT_ROUTER_LABELS, TritonAccess
from lexora_runtime.settings import ServiceSettings


class OperatorSettings(ServiceSettings):
    # How often every ModelDeployment is re-checked: drift in children other than the Deployment,
    # pod problems, rotated source credentials, and a registry that lost its records (a NATS
    # restart without storage).
    resync_seconds: float = 30.0
    # How often each ModelDeployment that scales to zero is checked for idleness (its
    # spec.autoscaling.scaleToZeroAfterSeconds is the idle time itself).
    idle_check_seconds: float = 10.0
    # kopf's liveness endpoint for the operator pod's probe; 0 disables it.
    health_port: int = 8080
    # Talk to this API server without credentials (kubectl proxy, tests). Unset: in-cluster service
    # account, else the kubeconfig.
    kube_server: str | None = None
    # Watch ModelDeployments in this namespace only (kopf --namespace); unset: every namespace.
    watch_namespace: str | None = None
    # One NetworkPolicy per model: Triton's HTTP and gRPC ports only from the router's pods.
    triton_network_policy: bool = True
    # The router's pods: their labels (JSON) and namespace (unset: POD_NAMESPACE, the operator's own
    # namespace, as the chart installs both; empty: any namespace). The chart sets both.
    router_pod_labels: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ROUTER_LABELS))
    router_namespace: str | None = None
    # Who may scrape Triton's metrics port (JSON list of NetworkPolicy peers); empty: anyone.
    triton_metrics_from: list[dict[str, Any]] = Field(default_factory=list)
    # The model cache's storage class (ReadWriteMany: NFS, CephFS, EFS, Filestore, Azure Files, ...);
    # a ModelDeployment's spec.cache.storageClassName overrides it. Unset: no model cache unless the
    # spec names a class; every pod fetches its own copy into an emptyDir.
    cache_storage_class: str | None = None
    # Prometheus, where KEDA's ScaledObjects query (spec.autoscaling.provider keda).
    prometheus_address: str = DEFAULT_PROMETHEUS_ADDRESS
    # Set by the Downward API in the operator's pod.
    pod_namespace: str | None = Field(default=None, validation_alias="POD_NAMESPACE")

    def triton_access(self) -> TritonAccess | None:
        if not self.triton_network_policy:
            return None
        namespace = self.router_namespace if self.router_namespace is not None else self.pod_namespace
        return TritonAccess(
            router_labels=dict(self.router_pod_labels),
            router_namespace=namespace or None,
            metrics_from=list(self.triton_metrics_from),
        )
