"""router's typed client: what other packages may import from lexora_router.

Jobs (generation, embedding, image) go to a router over NATS, and their chunks come back to a
private inbox as they arrive (`JobInboxes`, `GenerationStream`). A client subscribes once, to a
wildcard under its own inbox prefix, and hands each arriving chunk to the job whose reply subject
it is: no SUB/UNSUB per request, so the NATS server's subscription table (and the cache it keeps
for every publish) is not rewritten twice per request.
"""

from __future__ import annotations

import asyncio
import itertools
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from lexora_contracts import subjects
from lexora_contracts.errors import JobTimeout, ModelUnavailable, error_from_info
from lexora_contracts.messages import (
    CancelGeneration,
    CountTokensReply,
    CountTokensRequest,
    GenerationChunk,
    HealthProbe,
    HealthReply,
    JobHeader,
)
from lexora_runtime.bus import call, encode, request_headers

Job = JobHeader  # every job a gateway sends: GenerationRequest, EmbeddingJob, ImageJob
# Extra wait beyond the job deadline for the router's own 504 to arrive before we give up on it.
ROUTER_GRACE_S = 5.0
# Counting renders the chat template and tokenizes on the engine (images included).
COUNT_TIMEOUT_S = 30.0


class NoRouter(ModelUnavailable):
    """No router took the job: nobody else will record its outcome, so the caller must."""


class JobInboxes:
    """The reply subjects of one gateway's jobs, all under one wildcard subscription."""

    def __init__(self, nc: NATS):
        self.nc = nc
        self._prefix = nc.new_inbox()
        self._ids = itertools.count()
        self._queues: dict[str, asyncio.Queue[Msg]] = {}

    async def start(self) -> None:
        await self.nc.subscribe(f"{self._prefix}.*", cb=self._deliver)  # drained with the connection

    async def _deliver(self, msg: Msg) -> None:
        queue = self._queues.get(msg.subject)
        if queue is not None:  # else a chunk of a job nobody reads any more (client gone): dropped
            queue.put_nowait(msg)

    def open(self) -> tuple[str, asyncio.Queue[Msg]]:
        subject = f"{self._prefix}.{next(self._ids)}"
        queue = self._queues[subject] = asyncio.Queue()
        return subject, queue

    def close(self, subject: str) -> None:
        self._queues.pop(subject, None)


class GenerationStream:
    """A job on a router, read as it streams: text deltas for generation, `data` slices for
    embedding and image jobs, then the final chunk."""

    def __init__(self, inboxes: JobInboxes, request: Job, subject: str = subjects.ROUTER_GENERATION_START):
        self._inboxes = inboxes
        self._nc = inboxes.nc
        self.request = request
        self._subject = subject
        self._inbox: str | None = None
        self._queue: asyncio.Queue[Msg] | None = None
        self._held: GenerationChunk | None = None  # a final chunk whose text went out as a delta
        self.finished = False

    async def start(self) -> None:
        self._inbox, self._queue = self._inboxes.open()
        await self._nc.publish(
            self._subject,
            encode(self.request),
            reply=self._inbox,
            headers=request_headers(self.request.request_id),  # and the trace, when traced
        )

    async def next(self) -> GenerationChunk:
        """The next delta or the final chunk; router errors are raised as the typed error.

        A router sends a non-streaming job's answer in its final chunk; it is read here as a delta
        followed by the final chunk, as if it had streamed."""
        if self._held is not None:
            chunk, self._held = self._held, None
            return chunk
        chunk = await self._next_message()
        if chunk.kind == "accepted":  # sent by routers of earlier versions before the first output
            chunk = await self._next_message()
        if chunk.kind == "error":
            self.finished = True
            assert chunk.error is not None
            raise error_from_info(chunk.error)
        if chunk.kind == "done":
            self.finished = True
            if chunk.text:
                self._held = chunk.model_copy(update={"text": ""})
                return GenerationChunk(
                    kind="delta",
                    text=chunk.text,
                    prompt_tokens=chunk.prompt_tokens,
                    completion_tokens=chunk.completion_tokens,
                    max_tokens=chunk.max_tokens,
                )
        return chunk

    async def _next_message(self) -> GenerationChunk:
        assert self._queue is not None
        remaining = self.request.deadline + ROUTER_GRACE_S - time.time()
        try:
            async with asyncio.timeout(max(remaining, 0.001)):
                msg = await self._queue.get()
        except TimeoutError as exc:
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
        if self._inbox is not None:
            self._inboxes.close(self._inbox)
            self._inbox = self._queue = None

    async def release(self) -> None:
        """Cancel (if unfinished) and drop the inbox, even from code that is being cancelled.

        A disconnected client's response is cancelled under an anyio cancel scope, where every
        await in cleanup code is cancelled too; a shielded task runs to the end regardless, so the
        router is told and the inbox subscription does not leak.
        """

        if self.finished:  # the usual end: nothing to tell the router, so no task to shield
            await self.close()
            return

        async def cancel_and_close() -> None:
            try:
                await self.cancel()
            finally:
                await self.close()

        await asyncio.shield(asyncio.ensure_future(cancel_and_close()))


class RouterClient:
    """The router's request/reply endpoints; jobs stream through `JobInboxes`/`GenerationStream`."""

    def __init__(self, nc: NATS):
        self._nc = nc

    async def count_tokens(self, request: CountTokensRequest) -> CountTokensReply:
        """The model's own tokenizer over the prompt (chat template, images, reasoning budget)."""
        return await call(self._nc, subjects.ROUTER_TOKENS_COUNT, request, CountTokensReply, timeout=COUNT_TIMEOUT_S)

    async def health(self, timeout: float = 2.0) -> HealthReply:
        return await call(self._nc, subjects.ROUTER_HEALTH, HealthProbe(), HealthReply, timeout=timeout)
