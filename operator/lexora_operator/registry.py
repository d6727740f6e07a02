"""The model registry (NATS KV `lexora-models`) as the operator writes it.

`model_record` is pure: spec + whether the model serves -> the record the router and gateway read.
A model that does not serve keeps its catalog entry with `endpoints=[]` (listed as "pipeline",
answered with 503 model_unavailable); a deleted ModelDeployment is withdrawn (its key deleted).
"""

from __future__ import annotations

import asyncio
import logging

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from lexora_contracts.registry import DeploymentRef, Endpoint, ModelRecord, registry_key
from lexora_operator.render import grpc_address, http_address
from lexora_operator.spec import ModelDeploymentSpec
from lexora_runtime.bus import NatsAccess
from lexora_runtime.model_registry import publish_model, registry_bucket, withdraw_model

log = logging.getLogger("lexora.operator.registry")
CONNECT_TIMEOUT_S = 10


def model_record(name: str, namespace: str, spec: ModelDeploymentSpec, *, serving: bool, created: int) -> ModelRecord:
    endpoint = Endpoint(
        name=f"{namespace}/{name}",
        grpc_address=grpc_address(name, namespace),
        http_address=http_address(name, namespace),
    )
    endpoints = [endpoint] if serving else []
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
        created=created,
        endpoints=endpoints,
        deployments=[DeploymentRef(namespace=namespace, name=name)],
    )


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
            extra={"fields": {"model": record.id, "endpoints": [e.grpc_address for e in record.endpoints]}},
        )
        return True

    async def withdraw(self, model_id: str) -> None:
        if await self.current(model_id) is None:
            return
        await withdraw_model(await self._connect(), model_id)
        log.info("withdrew model", extra={"fields": {"model": model_id}})
