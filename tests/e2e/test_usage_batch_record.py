"""Usage records a batch of usage events in one transaction.

The recorder is driven directly (a fresh database per test) for the exact cases: duplicates inside
a batch, redelivery across batches, a batch whose transaction fails. Then usage runs as a process
on its own NATS server and database for what needs the consumer: a backlog recorded in a few
batches, redelivered events ignored, and poison events terminated while the rest of their batch
is recorded.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats
import pytest
from sqlalchemy import text

from lexora_contracts import subjects
from lexora_contracts.messages import UsageEvent
from lexora_db.engine import create_engine
from lexora_dev import stack
from lexora_dev.processes import ManagedProcess, free_port
from lexora_runtime.bus import encode, ensure_usage_stream
from lexora_usage.recorder import UsageRecorder
from support.usage_events import usage_event

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def recorder(database_url: str) -> AsyncIterator[UsageRecorder]:
    engine = create_engine(database_url)
    try:
        yield UsageRecorder(engine)
    finally:
        await engine.dispose()


async def query(database_url: str, sql: str) -> list[dict]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(text(sql))).mappings().all()]
    finally:
        await engine.dispose()


async def latencies(database_url: str) -> dict[str, int]:
    rows = await query(database_url, "SELECT request_id, latency_ms FROM usage_records")
    return {r["request_id"]: r["latency_ms"] for r in rows}


def _event(request_id: str, latency_ms: int = 1) -> UsageEvent:
    return usage_event(request_id, "acct_usage").model_copy(
        update={
            "key_id": "key_usage",
            "prompt_tokens": 3,
            "completion_tokens": 5,
            "cost_pico": 7,
            "latency_ms": latency_ms,
        }
    )


# ---- the recorder --------------------------------------------------------------------------------
async def test_a_batch_with_duplicates_writes_each_request_once(recorder: UsageRecorder, database_url: str) -> None:
    a, b, c = _event("req_a", 1), _event("req_b", 2), _event("req_c", 3)
    written = await recorder.record_batch([a, b, _event("req_a", 99), c, _event("req_b", 99), a], NOW)
    assert written == [a, b, c]
    assert await latencies(database_url) == {"req_a": 1, "req_b": 2, "req_c": 3}, "the first event wins"


async def test_a_redelivered_event_is_ignored(recorder: UsageRecorder, database_url: str) -> None:
    events = [_event(f"req_{n}", n) for n in range(300)]
    assert await recorder.record_batch(events[:200], NOW) == events[:200]
    # usage died before acking: JetStream redelivers the batch, now with later events behind it
    replayed = [e.model_copy(update={"latency_ms": 9999}) for e in events[:200]]
    assert await recorder.record_batch(replayed + events[200:], NOW) == events[200:]
    assert await recorder.record_batch(events[::-1], NOW) == []
    assert await latencies(database_url) == {e.request_id: e.latency_ms for e in events}


async def test_a_batch_whose_transaction_fails_writes_nothing(recorder: UsageRecorder, database_url: str) -> None:
    events = [_event(f"req_{n}") for n in range(5)]
    # No publisher sends it (UsageEvent requires an account), but the database refuses it either way.
    unstorable = UsageEvent.model_construct(**{**_event("req_bad").model_dump(), "account_id": None})
    with pytest.raises(Exception):  # noqa: B017 - the database's own not-null violation
        await recorder.record_batch([*events[:2], unstorable, *events[2:]], NOW)
    assert await latencies(database_url) == {}
    # the consumer redelivers the batch's events; those that can be stored are then recorded
    assert await recorder.record_batch(events, NOW) == events


async def test_an_empty_batch_writes_nothing(recorder: UsageRecorder, database_url: str) -> None:
    assert await recorder.record_batch([], NOW) == []
    assert await latencies(database_url) == {}


# ---- usage as a process --------------------------------------------------------------------------
class Usage:
    """nats-server and usage alone, on their own database."""

    def __init__(self, root: Path, database_url: str):
        port = free_port()
        self.nats = stack.start_nats(root, port)
        self.nats_url = f"nats://127.0.0.1:{port}"
        self.metrics_port = free_port()
        self.root = root
        self.database_url = database_url
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        config = stack.ServiceConfig(
            nats_url=self.nats_url,
            database_url=self.database_url,
            state_dir=self.root,
            gateway_port=0,
            extra_env={"LEXORA_METRICS_PORT": str(self.metrics_port)},
        )
        self.process = stack.start_service("usage", config)
        assert self.process is not None
        stack.wait_for_service(self.nats_url, subjects.USAGE_HEALTH, self.process, timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        self.nats.stop()

    def logs(self) -> str:
        return (self.root / "logs" / "usage.log").read_text(errors="replace")

    def publish(self, messages: list[bytes]) -> None:
        """Each message as a stream message of its own (a new Nats-Msg-Id), so JetStream keeps a
        repeated event as the consumer would get a redelivered one."""

        async def run() -> None:
            nc = await nats.connect(self.nats_url)
            js = nc.jetstream()
            try:
                await ensure_usage_stream(js)  # usage may not have started yet
                for data in messages:
                    await js.publish(
                        subjects.USAGE_REQUEST_COMPLETED, data, headers={subjects.MSG_ID_HEADER: uuid.uuid4().hex}
                    )
            finally:
                await nc.drain()

        asyncio.run(run())

    def consumer_state(self) -> tuple[int, int]:
        async def run() -> tuple[int, int]:
            nc = await nats.connect(self.nats_url)
            try:
                info = await nc.jetstream().consumer_info(subjects.USAGE_STREAM, subjects.USAGE_RECORD_CONSUMER)
                return info.num_ack_pending, info.num_pending
            finally:
                await nc.drain()

        return asyncio.run(run())

    def wait_until_consumed(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.consumer_state() != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert self.consumer_state() == (0, 0), "every event is acked or terminated, none redelivered for ever"

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the metric's samples that carry these labels."""
        body = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics").text
        wanted = [f'{label}="{value}"' for label, value in labels.items()]
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith(name + "{") and all(w in line for w in wanted)
        )


@pytest.fixture
def usage(database_url: str, tmp_path: Path) -> Iterator[Usage]:
    running = Usage(tmp_path / "usage", database_url)
    try:
        yield running
    finally:
        running.stop()


def test_a_backlog_is_recorded_in_batches_ignoring_redeliveries_and_poison(usage: Usage) -> None:
    events = [_event(f"req_{n}", n) for n in range(400)]
    not_an_event = encode(_event("x")).replace(b'"status_code":200', b'"status_code":"no"')
    redelivered = [encode(e.model_copy(update={"latency_ms": 9999})) for e in events[100:130]]
    # a backlog while usage is down: the poison events and the redeliveries sit amid the others
    usage.publish(
        [encode(e) for e in events[:200]]
        + [b"{not json", *redelivered, not_an_event]
        + [encode(e) for e in events[200:]]
    )
    usage.start()
    usage.wait_until_consumed()
    assert asyncio.run(latencies(usage.database_url)) == {e.request_id: e.latency_ms for e in events}
    assert usage.logs().count("usage event can never be handled") == 2
    assert usage.metric("lexora_requests_total", outcome="written") == 400
    assert usage.metric("lexora_requests_total", outcome="duplicate") == 30
    assert usage.metric("lexora_tokens_total", direction="input", model="test/model") == 400 * 3
    batches = usage.metric("lexora_request_seconds_count", operation="record_batch")
    assert 2 <= batches <= 20, f"{batches} transactions for 432 events"

    # once recorded, an event delivered again changes nothing
    usage.publish(redelivered)
    usage.wait_until_consumed()
    assert usage.metric("lexora_requests_total", outcome="duplicate") == 60
    assert asyncio.run(latencies(usage.database_url)) == {e.request_id: e.latency_ms for e in events}
