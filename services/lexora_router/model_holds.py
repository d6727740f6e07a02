"""Requests held for a model that has no ready replica but can be woken from zero
(`ModelRecord.wakes_on_request`): each waits, in a bounded per-model queue, until the registry shows
a replica it can use, or its deadline. The operator scales the model up when it hears the demand
this router announces for it (lexora_router.demand).

Beyond `limit` requests already waiting for the model, or at the deadline, a request is refused as
503 model_unavailable with Retry-After (never charged): the replica is still starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from lexora_contracts.errors import ModelUnavailable

T = TypeVar("T")
RECHECK_S = 1.0  # a held request looks again at least this often, whatever the registry says
MARGIN_S = 0.5  # a hold ends this long before the job's deadline, so its 503 beats the job's 504


class ModelHolds:
    def __init__(self, limit: int = 32, retry_after_s: int = 10):
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.waiting: Counter[str] = Counter()  # requests held, by model id
        # Set when a model gets its first held request: its demand is announced at once.
        self.woken = asyncio.Event()

    async def hold(
        self,
        model_id: str,
        ready: Callable[[], T | None],
        changed: Callable[[], Awaitable[None]],
        until: float,
    ) -> T:
        """Wait until `ready()` returns something (what the request runs with), looking again at
        each `changed()` (the registry's) and at least every RECHECK_S; `until`: the unix time the
        request must be answered by. Raises ModelUnavailable when the queue is full or time is up;
        `ready()` may raise too (the model was withdrawn)."""
        found = ready()
        if found is not None:
            return found
        if self.waiting[model_id] >= self.limit:
            raise ModelUnavailable(
                f"{model_id} is starting and {self.limit} requests already wait for it; "
                f"retry in {self.retry_after_s} seconds",
                retry_after=self.retry_after_s,
            )
        self.waiting[model_id] += 1
        self.woken.set()
        try:
            while True:
                found = ready()
                if found is not None:
                    return found
                remaining = until - MARGIN_S - time.time()
                if remaining <= 0:
                    raise ModelUnavailable(
                        f"{model_id} is starting and no replica was ready in time; "
                        f"retry in {self.retry_after_s} seconds",
                        retry_after=self.retry_after_s,
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed(), min(remaining, RECHECK_S))
        finally:
            self.waiting[model_id] -= 1
            if not self.waiting[model_id]:
                del self.waiting[model_id]
