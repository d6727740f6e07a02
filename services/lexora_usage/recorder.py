"""Writes usage events into usage_records (usage owns that table), once per request id.

A fetched batch of events is written in one transaction, with one multi-row INSERT ... ON CONFLICT
DO NOTHING: each request id once (the first of its events in the batch), and the database skips
the ones it already has (a redelivered event).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from lexora_contracts.messages import UsageEvent
from lexora_db.schema import usage_records

MODEL_CHARS = usage_records.c.model.type.length


def storable_model(model: str) -> str:
    """The model name as the column can hold it. A refused request records the name the client
    sent (any JSON string): Postgres rejects NUL and anything past the column's length, and an
    event that cannot be stored would be redelivered for ever."""
    return model.replace("\x00", "\ufffd")[:MODEL_CHARS]


def first_of_each_request(events: Sequence[UsageEvent]) -> list[UsageEvent]:
    """The events in order, without later ones for a request id seen before (JetStream can
    redeliver an event into the batch that already holds it): the first one wins."""
    unique: dict[str, UsageEvent] = {}
    for event in events:
        unique.setdefault(event.request_id, event)
    return list(unique.values())


def usage_row(event: UsageEvent, now: datetime) -> dict[str, Any]:
    return {
        "request_id": event.request_id,
        "account_id": event.account_id,
        "key_id": event.key_id,
        "model": storable_model(event.model),
        "endpoint": event.endpoint,
        "status_code": event.status_code,
        "error_type": event.error_type,
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "cost_pico": event.cost_pico,
        "finish_reason": event.finish_reason,
        "stream": event.stream,
        "thinking_used": event.thinking_used,
        "received_at": datetime.fromtimestamp(event.received_at, UTC),
        "latency_ms": event.latency_ms,
        "recorded_at": now,
    }


class UsageRecorder:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        # Executed with a list of rows, SQLAlchemy sends this as one multi-row INSERT (its
        # "insertmanyvalues", because of RETURNING) from a statement compiled once: far cheaper
        # than building `.values([...])` per batch, and RETURNING tells which rows were new.
        self._insert = insert(usage_records).on_conflict_do_nothing().returning(usage_records.c.request_id)

    async def record_batch(self, events: Sequence[UsageEvent], now: datetime) -> list[UsageEvent]:
        """Store a batch in one transaction, each request once; a request already stored is
        ignored (a redelivered event). Returns the events whose rows it wrote, in batch order."""
        unique = first_of_each_request(events)
        if not unique:
            return []
        async with self._engine.begin() as conn:
            result = await conn.execute(self._insert, [usage_row(event, now) for event in unique])
            written = set(result.scalars())
        return [event for event in unique if event.request_id in written]

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(select(1))
