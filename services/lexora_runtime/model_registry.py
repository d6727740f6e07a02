"""The model registry in NATS KV: writers publish records, readers keep a live in-memory view."""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from lexora_contracts import subjects
from lexora_contracts.registry import ModelRecord, registry_key

log = logging.getLogger(__name__)


async def registry_bucket(js: JetStreamContext) -> KeyValue:
    try:
        return await js.key_value(subjects.MODEL_REGISTRY_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=subjects.MODEL_REGISTRY_BUCKET, history=1)


async def publish_model(js: JetStreamContext, record: ModelRecord) -> None:
    kv = await registry_bucket(js)
    await kv.put(registry_key(record.id), record.model_dump_json().encode())


async def withdraw_model(js: JetStreamContext, model_id: str) -> None:
    kv = await registry_bucket(js)
    await kv.delete(registry_key(model_id))


class ModelRegistryView:
    """A read-only, always-current copy of the registry, so lookups on the hot path are dict reads."""

    def __init__(self) -> None:
        self._models: dict[str, ModelRecord] = {}
        self._by_alias: dict[str, ModelRecord] = {}
        self._task: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()

    def get(self, model_id: str) -> ModelRecord | None:
        """By id, else by alias."""
        return self._models.get(model_id) or self._by_alias.get(model_id)

    def all(self) -> list[ModelRecord]:
        return sorted(self._models.values(), key=lambda m: m.id)

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    async def start(self, js: JetStreamContext, timeout: float = 10.0) -> None:
        kv = await registry_bucket(js)
        watcher = await kv.watchall()
        self._task = asyncio.create_task(self._follow(watcher))
        await asyncio.wait_for(self._loaded.wait(), timeout)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:  # end of the initial snapshot
                self._loaded.set()
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self._models.pop(entry.key, None)
                self._index_aliases()
                continue
            try:
                record = ModelRecord.model_validate_json(entry.value)
            except ValueError:
                log.error("ignoring malformed registry record", extra={"fields": {"key": entry.key}})
                continue
            self._models[record.id] = record
            self._index_aliases()
            self._loaded.set()

    def _index_aliases(self) -> None:
        self._by_alias = {alias: m for m in self._models.values() for alias in m.aliases}
