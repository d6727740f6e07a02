"""Writes usage events into usage_records (usage owns that table), once per request id."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from lexora_contracts.messages import UsageEvent
from lexora_runtime.db import insert_ignoring_duplicates
from lexora_runtime.schema import usage_records

MODEL_CHARS = usage_records.c.model.type.length


def storable_model(model: str) -> str:
    """The model name as the column can hold it. A refused request records the name the client
    sent (any JSON string): Postgres rejects NUL and anything past the column's length, and an
    event that cannot be stored would be redelivered for ever."""
    return model.replace("\x00", "\ufffd")[:MODEL_CHARS]


class UsageRecorder:
    def __init__(self, engine: AsyncEngine, url: str):
        self._engine = engine
        self._insert = insert_ignoring_duplicates(url, usage_records)

    async def record(self, event: UsageEvent, now: datetime) -> bool:
        """Store the event; a redelivered event is ignored. Returns whether a row was written."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                self._insert.values(
                    request_id=event.request_id,
                    account_id=event.account_id,
                    key_id=event.key_id,
                    model=storable_model(event.model),
                    endpoint=event.endpoint,
                    status_code=event.status_code,
                    error_type=event.error_type,
                    prompt_tokens=event.prompt_tokens,
                    completion_tokens=event.completion_tokens,
                    cost_pico=event.cost_pico,
                    finish_reason=event.finish_reason,
                    stream=event.stream,
                    thinking_used=event.thinking_used,
                    received_at=datetime.fromtimestamp(event.received_at, UTC),
                    latency_ms=event.latency_ms,
                    recorded_at=now,
                )
            )
        return bool(result.rowcount)

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(select(1))
