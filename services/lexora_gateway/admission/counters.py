"""Shared counters in NATS KV, updated by compare-and-set so replicas never lose a count.

Within one process, the decisions waiting on the same counter are taken together: one read, each
decision in arrival order on the state the previous ones left, one compare-and-set for all. A hot
key (one API key sending many requests at once) then costs one write per round instead of one per
request, and only replicas race each other for it, not every request in flight.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from lexora_contracts import subjects
from lexora_contracts.errors import InternalError

T = TypeVar("T")
State = dict[str, Any]
Decide = Callable[[State | None], tuple[State, T]]
LIMITS_BUCKET = subjects.RATE_LIMITS_BUCKET
COUNTER_TTL_S = 2 * 24 * 3600  # past a day and a minute, a counter is stale anyway
MAX_ATTEMPTS = 50


async def limits_bucket(js: JetStreamContext) -> KeyValue:
    try:
        return await js.key_value(LIMITS_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=LIMITS_BUCKET, history=1, ttl=COUNTER_TTL_S)


@dataclass
class _Waiting(Generic[T]):
    decide: Decide[T]
    answer: asyncio.Future[T] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def take_in_order(state: State | None, waiting: list[_Waiting[Any]]) -> tuple[State | None, list[tuple[Any, Any]]]:
    """Each decision on the state the ones before it left; a refusal (the decision raised) leaves
    the state as it was. Returns the final state and, per decision, (result, exception)."""
    answers: list[tuple[Any, Any]] = []
    for one in waiting:
        try:
            state, result = one.decide(state)
        except Exception as exc:
            answers.append((None, exc))
        else:
            answers.append((result, None))
    return state, answers


class CounterStore:
    def __init__(self, kv: KeyValue):
        self._kv = kv
        self._waiting: dict[str, list[_Waiting[Any]]] = {}
        self._drains: set[asyncio.Task[None]] = set()

    async def read(self, key: str) -> State | None:
        try:
            entry = await self._kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return json.loads(entry.value) if entry.value else None

    async def apply(self, key: str, decide: Decide[T]) -> T:
        """Run `decide` on the current state and store its new state, atomically.

        `decide` may raise to refuse (nothing is written for it). Decisions waiting on the same
        key in this process are written together; a concurrent writer elsewhere makes the write
        fail on the revision check, and the decisions are then taken again on the fresh state.
        """
        waiting: _Waiting[T] = _Waiting(decide)
        queue = self._waiting.get(key)
        if queue is None:
            queue = self._waiting[key] = []
            # A task of its own: the caller that started it may be cancelled (its client left),
            # the others still need their answers.
            drain = asyncio.get_running_loop().create_task(self._drain(key, queue))
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        queue.append(waiting)
        return await waiting.answer

    async def _drain(self, key: str, queue: list[_Waiting[Any]]) -> None:
        try:
            while queue:
                batch = [one for one in queue if not one.answer.done()]  # done: its caller left
                queue.clear()
                try:
                    if batch:
                        await self._write(key, batch)
                except asyncio.CancelledError:  # shutdown: nobody waits for an answer that will not come
                    for one in batch:
                        one.answer.cancel()
                    raise
        finally:
            del self._waiting[key]
            for one in queue:
                one.answer.cancel()

    async def _write(self, key: str, batch: list[_Waiting[Any]]) -> None:
        try:
            for _ in range(MAX_ATTEMPTS):
                try:
                    entry = await self._kv.get(key)
                    state, revision = (json.loads(entry.value) if entry.value else None), entry.revision
                except (KeyNotFoundError, KeyDeletedError):
                    state, revision = None, None
                new_state, answers = take_in_order(state, batch)
                try:
                    if any(exc is None for _, exc in answers):
                        data = json.dumps(new_state, separators=(",", ":")).encode()
                        if revision is None:
                            await self._kv.create(key, data)
                        else:
                            await self._kv.update(key, data, last=revision)
                except KeyWrongLastSequenceError:
                    continue
                for one, (result, exc) in zip(batch, answers, strict=True):
                    _answer(one.answer, result, exc)
                return
            for one in batch:
                _answer(one.answer, None, InternalError("Rate limit counters are too contended; retry"))
        except Exception as exc:  # NATS down or timing out: every waiting caller hears it
            for one in batch:
                _answer(one.answer, None, exc)


def _answer(answer: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if answer.done():
        return
    if exc is not None:
        answer.set_exception(exc)
    else:
        answer.set_result(result)
