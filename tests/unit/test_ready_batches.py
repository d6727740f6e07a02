"""ready_batches: a stream read in groups of what arrived while the consumer was busy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest

from lexora_router.ready_batches import ready_batches


async def _paced(items: list[int], gap_s: float, closed: list[bool] | None = None) -> AsyncIterator[int]:
    try:
        for item in items:
            await asyncio.sleep(gap_s)
            yield item
    finally:
        if closed is not None:
            closed.append(True)


async def _burst(items: list[int]) -> AsyncIterator[int]:
    for item in items:
        await asyncio.sleep(0)  # like a network read that is already complete
        yield item


async def test_a_consumer_that_keeps_up_gets_each_item_alone() -> None:
    groups = [group async for group in ready_batches(_paced([1, 2, 3, 4], 0.01))]
    assert groups == [[1], [2], [3], [4]]


async def test_a_late_consumer_gets_what_piled_up_in_one_group_in_order() -> None:
    groups = []
    async with aclosing(ready_batches(_paced(list(range(10)), 0.002))) as stream:
        async for group in stream:
            groups.append(group)
            await asyncio.sleep(0.03)  # busy sending the previous group
    assert [item for group in groups for item in group] == list(range(10))
    assert groups[0] == [0]  # the first item is not held back to wait for more
    assert len(groups) < 6


async def test_a_burst_already_there_comes_in_few_groups() -> None:
    groups = [group async for group in ready_batches(_burst(list(range(16))))]
    assert [item for group in groups for item in group] == list(range(16))
    assert len(groups) <= 8


async def test_an_error_comes_after_the_items_before_it() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise ValueError("engine went away")

    received: list[int] = []
    with pytest.raises(ValueError, match="engine went away"):
        async for group in ready_batches(failing()):
            received.extend(group)
    assert received == [1, 2]


async def test_an_error_before_any_item_is_raised_at_once() -> None:
    async def unreachable() -> AsyncIterator[int]:
        raise ConnectionError("no engine")
        yield 0  # pragma: no cover - makes this a generator

    with pytest.raises(ConnectionError):
        async for _ in ready_batches(unreachable()):
            pass


async def test_stopping_early_closes_the_source() -> None:
    closed: list[bool] = []
    async with aclosing(ready_batches(_paced(list(range(100)), 0.001, closed))) as stream:
        async for _ in stream:
            break
    assert closed == [True]


async def test_a_cancelled_consumer_closes_the_source() -> None:
    closed: list[bool] = []

    async def consume() -> None:
        async with aclosing(ready_batches(_paced(list(range(100)), 0.01, closed))) as stream:
            async for _ in stream:
                pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.035)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == [True]
