"""The model registry (NATS KV `lexora-models`) as the operator writes it.

`model_record` is pure: the ModelDeployments serving one model id (spec and ready replicas each) ->
the record the router and gateway read. Several ModelDeployments may serve one id (a weighted
rollout): the catalog fields come from the oldest, every one adds its replicas and its weight. A
model with no ready replica keeps its catalog entry with `endpoints=[]` (listed as "pipeline",
answered with 503 model_unavailable, or held while it wakes from zero); when its last
ModelDeployment is deleted it is withdrawn (its key deleted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from pydantic import ValidationError

from lexora_contracts import subjects
from lexora_contracts.messages import ModelDemand
from lexora_contracts.registry import DeploymentRef, Endpoint, ModelRecord, registry_key
from lexora_operator.spec import ModelDeploymentSpec
from lexora_runtime.bus import NatsAccess
from lexora_runtime.model_registry import publish_model, registry_bucket, withdraw_model

log = logging.getLogger("lexora.operator.registry")
CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class Member:
    """One ModelDeployment of a model id, as the record is built from it."""

    name: str
    namespace: str
    spec: ModelDeploymentSpec
    created: str = ""  # metadata.creationTimestamp (RFC 3339, so it sorts as text)
    endpoints: tuple[Endpoint, ...] = field(default_factory=tuple)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def age_order(self) -> tuple[str, str]:
        """Oldest first; ties broken by namespace/name."""
        return (self.created, self.key)

    def deployment_ref(self) -> DeploymentRef:
        return DeploymentRef(
            namespace=self.namespace,
            name=self.name,
            weight=self.spec.traffic.weight,
            scales_from_zero=self.spec.scales_from_zero,
        )


def model_record(members: Sequence[Member]) -> ModelRecord:
    """The record of one model id from its ModelDeployments (at least one, all with that id and
    agreeing on kind and Triton model; rollout.py leaves out those that do not). Catalog fields come
    from the oldest; `deployments` are oldest first; endpoints are every member's ready replicas."""
    if not members:
        raise ValueError("a model record needs at least one ModelDeployment")
    ordered = sorted(members, key=lambda m: m.age_order)
    oldest = ordered[0]
    spec = oldest.spec
    return ModelRecord(
        id=spec.model.id,
        kind=spec.model.kind,
        owned_by=spec.owned_by,
        aliases=list(spec.aliases),
        triton_model=spec.triton_model_name,
        context_length=spec.context_length,
        pricing=spec.model.pricing.to_pricing(),
        template_overhead_tokens=spec.model.template_overhead_tokens,
        capabilities=list(spec.model.capabilities) or [spec.model.kind],
        created=_epoch(oldest.created),
        endpoints=[endpoint for member in ordered for endpoint in member.endpoints],
        deployments=[member.deployment_ref() for member in ordered],
    )


def _epoch(timestamp: str) -> int:
    if not timestamp:
        return 0
    try:
        return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


class RegistryPublisher:
    """Writes records only when they differ from what the bucket holds, so resyncs cost one read."""

    def __init__(self, nats_url: str, access: NatsAccess | None = None) -> None:
        self.nats_url = nats_url
        self.access = access or NatsAccess()
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._connecting = asyncio.Lock()

    async def _connect(self) -> JetStreamContext:
        """Connect on first use: the operator reconciles children even while NATS is still starting."""
        async with self._connecting:
            if self._js is not None:
                return self._js
            connecting = nats.connect(
                self.nats_url,
                name="lexora-operator",
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                connect_timeout=5,
                **self.access.options(),
            )
            self._nc = await asyncio.wait_for(connecting, CONNECT_TIMEOUT_S)
            self._js = self._nc.jetstream()
            return self._js

    async def hear_demand(self, handler: Callable[[ModelDemand], Awaitable[object]]) -> None:
        """Call `handler` with each ModelDemand the routers announce, one at a time (the connection
        resubscribes by itself after a reconnect)."""
        await self._connect()
        assert self._nc is not None

        async def on_message(msg: Msg) -> None:
            try:
                demand = ModelDemand.model_validate_json(msg.data)
            except ValidationError as exc:
                log.warning("unreadable model demand", extra={"fields": {"error": str(exc)[:200]}})
                return
            try:
                await handler(demand)
            except Exception as exc:  # noqa: BLE001 - the next announcement (every ~2 s) tries again
                log.warning(
                    "acting on model demand failed", extra={"fields": {"model": demand.model_id, "error": repr(exc)}}
                )

        await self._nc.subscribe(subjects.ROUTER_MODEL_DEMANDED, cb=on_message)

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.drain()

    async def current(self, model_id: str) -> ModelRecord | None:
        kv = await registry_bucket(await self._connect())
        try:
            entry = await kv.get(registry_key(model_id))
        except KeyNotFoundError:
            return None
        return ModelRecord.model_validate_json(entry.value) if entry.value else None

    async def publish(self, record: ModelRecord) -> bool:
        """Publish unless the bucket already holds exactly this record. Returns whether it wrote."""
        if await self.current(record.id) == record:
            return False
        await publish_model(await self._connect(), record)
        log.info(
            "published model",
            extra={"fields": {"model": record.id, "endpoints": [e.name for e in record.endpoints]}},
        )
        return True

    async def withdraw(self, model_id: str) -> None:
        if await self.current(model_id) is None:
            return
        await withdraw_model(await self._connect(), model_id)
        log.info("withdrew model", extra={"fields": {"model": model_id}})
