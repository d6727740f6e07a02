"""The shared rate-limit counters against a real nats-server: one API key sending many requests at
once, from one gateway and from two, is counted exactly, without internal errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from lexora_contracts.errors import RateLimitExceeded
from lexora_contracts.plans import PlanLimits
from lexora_gateway.admission import limits
from lexora_gateway.admission.counters import CounterStore, limits_bucket

NOW = datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)
KEY = "key.hot"


@pytest.fixture
async def connections(nats_url: str) -> AsyncIterator[list[NATS]]:
    """Two connections: two gateway replicas."""
    opened = [await nats.connect(nats_url) for _ in range(2)]
    try:
        yield opened
    finally:
        for nc in opened:
            await nc.drain()


async def _store(nc: NATS) -> CounterStore:
    return CounterStore(await limits_bucket(nc.jetstream()))


def _admit(plan: PlanLimits) -> Any:
    return lambda state: limits.admit_key(state, plan, NOW, "UTC")


async def _send(store: CounterStore, plan: PlanLimits, n: int) -> list[limits.Admission | BaseException]:
    return await asyncio.gather(*(store.apply(KEY, _admit(plan)) for _ in range(n)), return_exceptions=True)


async def test_many_requests_at_once_on_one_key_are_all_counted_in_few_writes(connections: list[NATS]) -> None:
    store = await _store(connections[0])
    plan = PlanLimits(requests_per_minute=10_000)

    results = await _send(store, plan, 200)

    assert all(isinstance(r, limits.Admission) for r in results), [r for r in results if isinstance(r, BaseException)]
    # Every request saw its own place in the minute: remaining counts down without gaps or repeats.
    assert sorted(r.remaining for r in results) == list(range(10_000 - 200, 10_000))  # type: ignore[union-attr]
    assert (await store.read(KEY))["mc"] == 200  # type: ignore[index]
    entry = await (await limits_bucket(connections[0].jetstream())).get(KEY)
    assert entry.revision is not None and entry.revision < 50, "one write per waiting round, not per request"


async def test_a_limit_reached_mid_round_admits_exactly_up_to_it(connections: list[NATS]) -> None:
    store = await _store(connections[0])
    plan = PlanLimits(requests_per_minute=40)

    results = await _send(store, plan, 64)

    admitted = [r for r in results if isinstance(r, limits.Admission)]
    refused = [r for r in results if isinstance(r, RateLimitExceeded)]
    assert (len(admitted), len(refused)) == (40, 24)
    assert all(r.retry_after == 30 for r in refused)  # the minute resets 30 s after NOW
    assert (await store.read(KEY))["mc"] == 40  # type: ignore[index]


async def test_two_gateways_share_the_limit_exactly(connections: list[NATS]) -> None:
    stores = [await _store(nc) for nc in connections]
    plan = PlanLimits(requests_per_minute=100)

    first, second = await asyncio.gather(*(_send(store, plan, 80) for store in stores))

    results = first + second
    assert not [r for r in results if not isinstance(r, limits.Admission | RateLimitExceeded)]
    assert sum(isinstance(r, limits.Admission) for r in results) == 100
    assert (await stores[0].read(KEY))["mc"] == 100  # type: ignore[index]


async def test_a_caller_that_leaves_does_not_hold_up_the_others(connections: list[NATS]) -> None:
    store = await _store(connections[0])
    plan = PlanLimits(requests_per_minute=1_000)
    calls = [asyncio.ensure_future(store.apply(KEY, _admit(plan))) for _ in range(10)]
    calls[0].cancel()  # its client went away before it was counted

    results = await asyncio.gather(*calls, return_exceptions=True)

    assert isinstance(results[0], asyncio.CancelledError)
    assert all(isinstance(r, limits.Admission) for r in results[1:])
    assert (await store.read(KEY))["mc"] == 9  # type: ignore[index]


async def test_the_next_round_starts_from_what_the_last_one_wrote(connections: list[NATS]) -> None:
    store = await _store(connections[0])
    plan = PlanLimits(requests_per_minute=1_000)

    await _send(store, plan, 5)
    later = await store.apply(KEY, _admit(plan))

    assert later.remaining == 1_000 - 6
    assert (await store.read(KEY))["mc"] == 6  # type: ignore[index]
