"""The model registry record: catalog data plus live Triton endpoints.

Written by the operator (or the local stack) into the NATS KV bucket `lexora-models`, one key per
model id; read by the router (to pick an endpoint) and the gateway (to answer 404/503 and price).
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

    def pricing_at(self, moment: datetime) -> Pricing:
        """The price in force at `moment`: the latest scheduled change already in effect, else `pricing`."""
        due = [change for change in self.price_changes if change.effective_from <= moment]
        return max(due, key=lambda change: change.effective_from).pricing if due else self.pricing

    @property
    def ready_endpoints(self) -> list[Endpoint]:
        return [e for e in self.endpoints if e.ready]

    @property
    def status(self) -> Literal["live", "pipeline"]:
        return "live" if self.ready_endpoints else "pipeline"


def registry_key(model_id: str) -> str:
    """KV key for a model id. Hugging Face style ids are valid keys as they are."""
    if not _KV_KEY.match(model_id) or model_id.startswith(".") or model_id.endswith("."):
        raise ValueError(f"model id {model_id!r} cannot be a registry key")
    return model_id
