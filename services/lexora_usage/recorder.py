"""Writes usage events into usage_records (usage owns that table), once per request id."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from lexora_contracts.messages import UsageEvent
from lexora_runtime.db import insert_ignoring_duplicates
from lexora_runtime.schema import usage_records


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
                    model=event.model,
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
