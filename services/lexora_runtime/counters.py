"""Shared counters in NATS KV, updated by compare-and-set so replicas never lose a count."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from lexora_contracts.errors import InternalError

T = TypeVar("T")
LIMITS_BUCKET = "lexora-limits"
COUNTER_TTL_S = 2 * 24 * 3600  # past a day and a minute, a counter is stale anyway
MAX_ATTEMPTS = 50


async def limits_bucket(js: JetStreamContext) -> KeyValue:
    try:
        return await js.key_value(LIMITS_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=LIMITS_BUCKET, history=1, ttl=COUNTER_TTL_S)


class CounterStore:
    def __init__(self, kv: KeyValue):
        self._kv = kv

    async def read(self, key: str) -> dict[str, Any] | None:
        try:
            entry = await self._kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return json.loads(entry.value) if entry.value else None

    async def apply(self, key: str, decide: Callable[[dict[str, Any] | None], tuple[dict[str, Any], T]]) -> T:
        """Run `decide` on the current state and store its new state, atomically.

        `decide` may raise to refuse (nothing is written). A concurrent writer makes the write fail
        on the revision check; the decision is then taken again on the fresh state.
        """
        for _ in range(MAX_ATTEMPTS):
            try:
                entry = await self._kv.get(key)
                state, revision = (json.loads(entry.value) if entry.value else None), entry.revision
            except (KeyNotFoundError, KeyDeletedError):
                state, revision = None, None
            new_state, result = decide(state)
            data = json.dumps(new_state, separators=(",", ":")).encode()
            try:
                if revision is None:
                    await self._kv.create(key, data)
                else:
                    await self._kv.update(key, data, last=revision)
                return result
            except KeyWrongLastSequenceError:
                continue
        raise InternalError("Rate limit counters are too contended; retry")
