"""Operator settings from the environment (LEXORA_ prefix), built in main(), never at import."""

from __future__ import annotations

from lexora_runtime.settings import ServiceSettings


class OperatorSettings(ServiceSettings):
    # How often every ModelDeployment is re-checked: drift in children other than the Deployment,
    # pod problems, and a registry that lost its records (a NATS restart without storage).
    resync_seconds: float = 30.0
    # kopf's liveness endpoint for the operator pod's probe; 0 disables it.
    health_port: int = 8080
    # Talk to this API server without credentials (kubectl proxy, tests). Unset: in-cluster service
    # account, else the kubeconfig.
    kube_server: str | None = None
