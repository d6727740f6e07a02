"""Sends a job to a router over NATS and reads its chunks from a private inbox as they arrive."""

from __future__ import annotations

import asyncio
import time

import nats
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

from lexora_contracts import subjects
from lexora_contracts.errors import JobTimeout, ModelUnavailable, error_from_info
from lexora_contracts.messages import CancelGeneration, GenerationChunk, GenerationRequest, JobHeader
from lexora_runtime.bus import encode

Job = GenerationRequest | JobHeader
# Extra wait beyond the job deadline for the router's own 504 to arrive before we give up on it.
ROUTER_GRACE_S = 5.0


class NoRouter(ModelUnavailable):
    """No router took the job: nobody else will record its outcome, so the caller must."""


class GenerationStream:
    """A job on a router, read as it streams: text deltas for generation, `data` slices for
    embedding and image jobs, then the final chunk."""

    def __init__(self, nc: NATS, request: Job, subject: str = subjects.ROUTER_GENERATION_START):
        self._nc = nc
        self.request = request
        self._subject = subject
        self._sub: Subscription | None = None
        self.finished = False

    async def start(self) -> None:
        inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(inbox)
        await self._nc.publish(
            self._subject,
            encode(self.request),
            reply=inbox,
            headers={subjects.REQUEST_ID_HEADER: self.request.request_id},
        )
        first = await self._next_message()
        if first.kind != "accepted":
            raise ModelUnavailable("The router answered out of order")

    async def next(self) -> GenerationChunk:
        """The next delta or the final chunk; router errors are raised as the typed error."""
        chunk = await self._next_message()
        if chunk.kind == "error":
            self.finished = True
            assert chunk.error is not None
            raise error_from_info(chunk.error)
        if chunk.kind == "done":
            self.finished = True
        return chunk

    async def _next_message(self) -> GenerationChunk:
        assert self._sub is not None
        remaining = self.request.deadline + ROUTER_GRACE_S - time.time()
        try:
            msg = await self._sub.next_msg(timeout=max(remaining, 0.001))
        except nats.errors.TimeoutError as exc:
            await self.cancel()
            raise JobTimeout("The job took longer than the time limit and was stopped") from exc
        if msg.headers and msg.headers.get("Status") == "503":
            self.finished = True
            raise NoRouter("No router is available for this model; retry in 30 seconds")
        return GenerationChunk.model_validate_json(msg.data)

    async def cancel(self) -> None:
        """Tell the router to stop (the client left): it charges only what was produced."""
        if not self.finished:
            self.finished = True
            await self._nc.publish(
                subjects.ROUTER_GENERATION_CANCEL, encode(CancelGeneration(request_id=self.request.request_id))
            )

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def release(self) -> None:
        """Cancel (if unfinished) and drop the inbox, even from code that is being cancelled.

        A disconnected client's response is cancelled under an anyio cancel scope, where every
        await in cleanup code is cancelled too; a shielded task runs to the end regardless, so the
        router is told and the inbox subscription does not leak.
        """

        async def cancel_and_close() -> None:
            try:
                await self.cancel()
            finally:
                await self.close()

        await asyncio.shield(asyncio.ensure_future(cancel_and_close()))
