"""Read an async stream in groups: each group is what arrived while the consumer was busy.

A consumer that keeps up gets one item per group, as soon as it arrives. One that falls behind
(a busy event loop, a slow sink) gets everything that piled up meanwhile in one group, so its
per-group cost (a message, a write) is paid once for many items instead of once per item. Nothing
is held back to wait for more: the batching comes only from the consumer being late.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class _End:
    pass


@dataclass
class _Failed:
    error: BaseException


async def ready_batches(source: AsyncIterator[T]) -> AsyncIterator[list[T]]:
    """Groups of the items of `source`, in order. An error of `source` is raised after the items
    that came before it have been handed over. Closing this generator stops reading `source`
    (it is closed by the task that reads it)."""
    queue: asyncio.Queue[T | _End | _Failed] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in source:
                queue.put_nowait(item)
        except Exception as exc:
            queue.put_nowait(_Failed(exc))
        else:
            queue.put_nowait(_End())

    reader = asyncio.get_running_loop().create_task(pump())
    try:
        while True:
            arrived = [await queue.get()]
            await asyncio.sleep(0)  # one turn of the loop: the reader adds what it already has
            while not queue.empty():
                arrived.append(queue.get_nowait())
            group: list[T] = []
            for item in arrived:
                if isinstance(item, _End | _Failed):
                    if group:
                        yield group
                    if isinstance(item, _Failed):
                        raise item.error
                    return
                group.append(item)
            yield group
    finally:
        if not reader.done():
            reader.cancel()
            await asyncio.wait({reader})  # the source is closed before we return
