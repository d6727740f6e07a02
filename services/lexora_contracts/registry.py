"""The model registry record: catalog data plus live Triton endpoints.

Written by the operator (or the local stack) into the NATS KV bucket `lexora-models`, one key per
model id; read by the router (to pick an endpoint) and the gateway (to answer 404/503 and price).

Whether an endpoint's engine can actually serve is observed, not declared: routers probe each
endpoint and record failures as `EndpointHealth` in a second bucket, `lexora-endpoint-health`, and
readers fold it into the records they hand out (`Endpoint.healthy`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

ModelKind = Literal["chat", "embedding", "image"]
_KV_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")


class Pricing(BaseModel):
    """Integer prices: micro-USD per 1M input/output tokens, or micro-USD per image. 0 = free."""

    input_micro_per_mtok: int = Field(ge=0)
    output_micro_per_mtok: int = Field(ge=0)
    image_micro: int = Field(default=0, ge=0)

    @property
    def is_free(self) -> bool:
        return self.input_micro_per_mtok == 0 and self.output_micro_per_mtok == 0 and self.image_micro == 0


class ScheduledPrice(BaseModel):
    """A price that takes effect at a moment: requests are priced when they arrive, so a change
    never re-prices past usage (each usage record keeps the cost it was charged)."""

    effective_from: datetime
    pricing: Pricing


class Endpoint(BaseModel):
    """One Triton instance serving the model: its gRPC address, and its HTTP address where it
    publishes one (streaming chat goes over HTTP's `generate_stream`, which costs the router a third
    of the CPU of a gRPC call; a record without it is served over gRPC alone)."""

    name: str
    grpc_address: str  # host:port
    http_address: str | None = None  # host:port
    ready: bool = True
    # The ModelDeployment this replica belongs to (`DeploymentRef.key`, "namespace/name"): the router
    # splits a model's traffic among its deployments by their weights. None: the dev stack's.
    deployment: str | None = None
    # host:port of the replica's Triton metrics (Prometheus text), where the router reads the
    # engine's own queue and KV-cache use to weigh its choice. None: not reported.
    metrics_address: str | None = None
    # Observed, never written by the operator: False while the router's probes or a failed request
    # say the engine cannot serve (filled in by readers from the endpoint-health bucket).
    healthy: bool = True
    unhealthy_reason: str | None = None


class DeploymentRef(BaseModel):
    """A Kubernetes ModelDeployment that serves a model: what the router labels the model's pending
    requests with (so an autoscaler can select them for that ModelDeployment), its share of the
    model's traffic, and whether a request may wake it from zero replicas."""

    namespace: str
    name: str
    # spec.traffic.weight. A model's traffic is split among its deployments that have a ready
    # replica in proportion to their weights; a deployment at 0 takes traffic only while no
    # deployment with a weight above 0 has a ready replica.
    weight: int = Field(default=100, ge=0)
    # Its autoscaling allows zero replicas: while none of the model's replicas is ready, a router
    # holds the model's requests (bounded) and announces the demand (`ModelDemand`) to wake it.
    scales_from_zero: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class EndpointHealth(BaseModel):
    """What a router last saw of one model on one endpoint: a real request served, or failed."""

    model_id: str
    endpoint: str  # Endpoint.name
    healthy: bool
    reason: str | None = None  # why not, in the engine's words
    since: float  # unix time the endpoint entered this state
    checked_at: float  # unix time of the observation
    observer: str = ""  # the router that saw it

    @property
    def key(self) -> str:
        return endpoint_health_key(self.model_id, self.endpoint)


ModelStatus = Literal["live", "degraded", "pipeline"]


class ModelRecord(BaseModel):
    id: str
    kind: ModelKind = "chat"
    owned_by: str = "lexora"
    triton_model: str
    context_length: int = Field(gt=0)
    pricing: Pricing
    # Tokens the model's chat template may add on top of the message text (a default system prompt,
    # role markers). Used only to bound the credit reservation from above.
    template_overhead_tokens: int = Field(default=64, ge=0)
    capabilities: list[str] = Field(default_factory=list)
    embedding_dimensions: int | None = Field(default=None, gt=0)  # embedding models: the vector size
    price_changes: list[ScheduledPrice] = Field(default_factory=list)
    # Other names clients may send for this model (e.g. the Claude model names Claude Code asks for).
    aliases: list[str] = Field(default_factory=list)
    created: int = 0
    endpoints: list[Endpoint] = Field(default_factory=list)
    # The ModelDeployments serving this model id, oldest first (several during a weighted rollout).
    # Empty: not published by the operator (the dev stack).
    deployments: list[DeploymentRef] = Field(default_factory=list)

    def pricing_at(self, moment: datetime) -> Pricing:
        """The price in force at `moment`: the latest scheduled change already in effect, else `pricing`."""
        due = [change for change in self.price_changes if change.effective_from <= moment]
        return max(due, key=lambda change: change.effective_from).pricing if due else self.pricing

    @property
    def deployed_endpoints(self) -> list[Endpoint]:
        """Endpoints whose deployment says ready, whatever their engine's health: what to probe."""
        return [e for e in self.endpoints if e.ready]

    @property
    def ready_endpoints(self) -> list[Endpoint]:
        """Endpoints that can take a request: deployed ready and not seen failing."""
        return [e for e in self.endpoints if e.ready and e.healthy]

    @property
    def wakes_on_request(self) -> bool:
        """A request may wake one of its deployments from zero replicas: held, not refused, while
        no replica is up."""
        return any(d.scales_from_zero for d in self.deployments)

    @property
    def status(self) -> ModelStatus:
        """live: an endpoint serves; degraded: endpoints are up but none of their engines can serve;
        pipeline: no endpoint is up."""
        if self.ready_endpoints:
            return "live"
        return "degraded" if self.deployed_endpoints else "pipeline"

    def with_health(self, health: dict[str, EndpointHealth]) -> ModelRecord:
        """This record with each endpoint's observed health (by `endpoint_health_key`) applied."""
        if not health:
            return self
        endpoints = []
        for endpoint in self.endpoints:
            seen = health.get(endpoint_health_key(self.id, endpoint.name))
            if seen is not None and not seen.healthy:
                endpoint = endpoint.model_copy(update={"healthy": False, "unhealthy_reason": seen.reason})
            endpoints.append(endpoint)
        return self.model_copy(update={"endpoints": endpoints})


def endpoint_health_key(model_id: str, endpoint: str) -> str:
    """KV key of one model on one endpoint in the endpoint-health bucket."""
    key = f"{model_id}={endpoint}"
    if not _KV_KEY.match(key) or key.endswith("."):
        raise ValueError(f"{key!r} cannot be an endpoint-health key")
    return key


def registry_key(model_id: str) -> str:
    """KV key for a model id. Hugging Face style ids are valid keys as they are."""
    if not _KV_KEY.match(model_id) or model_id.startswith(".") or model_id.endswith("."):
        raise ValueError(f"model id {model_id!r} cannot be a registry key")
    return model_id
