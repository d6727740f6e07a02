"""The model registry in NATS KV: writers publish records, readers keep a live in-memory view.

Two buckets: `lexora-models` (the catalog and endpoints, written by the operator or the local
stack) and `lexora-endpoint-health` (what routers observed of each endpoint's engine). The view
folds the second into the first, so `ready_endpoints` and `status` say whether an engine can serve.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from lexora_contracts import subjects
from lexora_contracts.registry import EndpointHealth, ModelRecord, registry_key

log = logging.getLogger(__name__)

# An endpoint-health entry lives this long unless rewritten: a router rewrites an unhealthy one
# well within it (lexora_router.prober), so only the word of a router that went away expires.
# JetStream drops expired entries without telling watchers, so the view ages them out itself.
ENDPOINT_HEALTH_TTL_S = 180.0
_SWEEP_S = 15.0


async def registry_bucket(js: JetStreamContext) -> KeyValue:
    try:
        return await js.key_value(subjects.MODEL_REGISTRY_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=subjects.MODEL_REGISTRY_BUCKET, history=1)


async def endpoint_health_bucket(js: JetStreamContext) -> KeyValue:
    try:
        return await js.key_value(subjects.ENDPOINT_HEALTH_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=subjects.ENDPOINT_HEALTH_BUCKET, history=1, ttl=ENDPOINT_HEALTH_TTL_S)


async def publish_model(js: JetStreamContext, record: ModelRecord) -> None:
    kv = await registry_bucket(js)
    await kv.put(registry_key(record.id), record.model_dump_json().encode())


async def withdraw_model(js: JetStreamContext, model_id: str) -> None:
    kv = await registry_bucket(js)
    await kv.delete(registry_key(model_id))


async def publish_endpoint_health(js: JetStreamContext, health: EndpointHealth) -> None:
    kv = await endpoint_health_bucket(js)
    await kv.put(health.key, health.model_dump_json().encode())


async def read_endpoint_health(js: JetStreamContext) -> dict[str, EndpointHealth]:
    """Every endpoint-health entry now in the bucket, by key."""
    kv = await endpoint_health_bucket(js)
    found: dict[str, EndpointHealth] = {}
    watcher = await kv.watchall()
    try:
        async for entry in watcher:
            if entry is None:
                break
            if entry.operation not in ("DEL", "PURGE") and entry.value:
                found[entry.key] = EndpointHealth.model_validate_json(entry.value)
    finally:
        await watcher.stop()
    return found


class ModelRegistryView:
    """A read-only, always-current copy of the registry with each endpoint's observed health
    applied, so lookups on the hot path are dict reads."""

    def __init__(self) -> None:
        self._records: dict[str, ModelRecord] = {}  # as published
        self._health: dict[str, dict[str, EndpointHealth]] = {}  # model id -> key -> health
        self._models: dict[str, ModelRecord] = {}  # with health applied
        self._by_alias: dict[str, ModelRecord] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._loaded = asyncio.Event()
        self._health_loaded = asyncio.Event()
        self._change = asyncio.Event()  # set (and replaced) at each change

    def get(self, model_id: str) -> ModelRecord | None:
        """By id, else by alias."""
        return self._models.get(model_id) or self._by_alias.get(model_id)

    def all(self) -> list[ModelRecord]:
        return sorted(self._models.values(), key=lambda m: m.id)

    async def changed(self) -> None:
        """Returns at the next change of any record: published, withdrawn, or an endpoint's health."""
        await self._change.wait()

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set() and self._health_loaded.is_set()

    async def start(self, js: JetStreamContext, timeout: float = 10.0) -> None:
        records = await (await registry_bucket(js)).watchall()
        health = await (await endpoint_health_bucket(js)).watchall()
        self._tasks = [
            asyncio.create_task(self._follow(records)),
            asyncio.create_task(self._follow_health(health)),
            asyncio.create_task(self._sweep_health()),
        ]
        await asyncio.wait_for(asyncio.gather(self._loaded.wait(), self._health_loaded.wait()), timeout)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:  # end of the initial snapshot
                self._loaded.set()
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self._records.pop(entry.key, None)
                self._models.pop(entry.key, None)
                self._index_aliases()
                self._changed()
                continue
            try:
                record = ModelRecord.model_validate_json(entry.value)
            except ValueError:
                log.error("ignoring malformed registry record", extra={"fields": {"key": entry.key}})
                continue
            self._records[record.id] = record
            self._apply(record.id)
            self._loaded.set()

    async def _follow_health(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:
                self._health_loaded.set()
                continue
            model_id = entry.key.rpartition("=")[0]
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self._health.get(model_id, {}).pop(entry.key, None)
            else:
                try:
                    health = EndpointHealth.model_validate_json(entry.value)
                except ValueError:
                    log.error("ignoring malformed endpoint health", extra={"fields": {"key": entry.key}})
                    continue
                self._health.setdefault(health.model_id, {})[entry.key] = health
            self._apply(model_id)

    async def _sweep_health(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            stale_before = time.time() - ENDPOINT_HEALTH_TTL_S
            for model_id, entries in list(self._health.items()):
                stale = [key for key, health in entries.items() if health.checked_at < stale_before]
                for key in stale:
                    del entries[key]
                if stale:
                    self._apply(model_id)

    def _apply(self, model_id: str) -> None:
        record = self._records.get(model_id)
        if record is None:
            return
        self._models[model_id] = record.with_health(self._health.get(model_id, {}))
        self._index_aliases()
        self._changed()

    def _index_aliases(self) -> None:
        self._by_alias = {alias: m for m in self._models.values() for alias in m.aliases}
