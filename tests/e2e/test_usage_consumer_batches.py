"""The usage-event consumer that billing and usage share, against a real nats-server: how it
groups events into batches, with and without a gather window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext

from lexora_contracts.messages import UsageEvent
from lexora_runtime.bus import consume_usage_event_batches, ensure_usage_stream, publish_usage_event
from support.usage_events import usage_event


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_usage_stream(js)
    try:
        yield js
    finally:
        await nc.drain()


def _event(n: int) -> UsageEvent:
    return usage_event(f"req_{n}", "acct_consumer")


class Batches:
    """Runs the consumer and keeps the batches it hands over, in order."""

    def __init__(self, js: JetStreamContext, gather_s: float):
        self.js = js
        self.gather_s = gather_s
        self.seen: list[list[str]] = []
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def handle(self, batch: list[bytes]) -> list[BaseException | None]:
        self.seen.append([UsageEvent.model_validate_json(data).request_id for data in batch])
        return [None] * len(batch)

    def start(self) -> None:
        self.task = asyncio.create_task(
            consume_usage_event_batches(self.js, "test-consumer", self.handle, self.stop, gather_s=self.gather_s)
        )

    async def wait_for(self, count: int, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while sum(map(len, self.seen)) < count:
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait([self.task], timeout=5)


async def _trickle(js: JetStreamContext, numbers: range, gap_s: float) -> None:
    for n in numbers:
        await publish_usage_event(js, _event(n))
        await asyncio.sleep(gap_s)


async def test_events_that_trickle_in_are_gathered_into_one_batch(js: JetStreamContext) -> None:
    batches = Batches(js, gather_s=0.5)
    batches.start()
    try:
        await _trickle(js, range(5), gap_s=0.02)  # all five within the first one's gather window
        await batches.wait_for(5)
        assert batches.seen == [[f"req_{n}" for n in range(5)]]
    finally:
        await batches.close()


async def test_without_a_gather_window_each_event_that_arrives_alone_is_its_own_batch(js: JetStreamContext) -> None:
    batches = Batches(js, gather_s=0)
    batches.start()
    try:
        for n in range(3):
            await publish_usage_event(js, _event(n))
            await batches.wait_for(n + 1)  # handled before the next one exists
        assert batches.seen == [["req_0"], ["req_1"], ["req_2"]]
    finally:
        await batches.close()


async def test_a_lone_event_is_handled_without_waiting_for_another(js: JetStreamContext) -> None:
    batches = Batches(js, gather_s=0.05)
    batches.start()
    try:
        await publish_usage_event(js, _event(1))
        await batches.wait_for(1)
        await publish_usage_event(js, _event(2))
        await batches.wait_for(2)
        assert batches.seen == [["req_1"], ["req_2"]]
    finally:
        await batches.close()


async def test_a_backlog_is_taken_in_a_few_batches(js: JetStreamContext) -> None:
    await asyncio.gather(*(publish_usage_event(js, _event(n)) for n in range(40)))
    batches = Batches(js, gather_s=0.05)
    batches.start()
    try:
        await batches.wait_for(40)
        assert sorted(n for batch in batches.seen for n in batch) == sorted(f"req_{n}" for n in range(40))
        assert len(batches.seen) <= 2, "a backlog is not taken one event at a time"
    finally:
        await batches.close()
