"""Sending an admitted job to a router (lexora_gateway.admission.admit) and reading its answer."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

from nats.errors import MaxPayloadError

from lexora_contracts.errors import PayloadTooLarge
from lexora_contracts.messages import GenerationChunk
from lexora_gateway.admission.admit import Admitted, record_refusal
from lexora_gateway.admission.credit_leases import CreditLeases
from lexora_gateway.chat.answer import Answer, AnswerReader, Piece
from lexora_gateway.state import GatewayState
from lexora_router.client import GenerationStream, NoRouter
from lexora_runtime import tracing
from lexora_runtime.logs import request_id_var


async def dispatch(state: GatewayState, admitted: Admitted) -> tuple[GenerationStream, GenerationChunk]:
    """Publish the job; returns the live stream and its first delta (or final chunk).

    Errors before any output are raised here, so a streaming client still gets a proper HTTP status
    for them."""
    stream = job_stream(state, admitted)
    try:
        return stream, await first_output(state, admitted, stream)
    except BaseException:
        await stream.release()
        raise


def job_stream(state: GatewayState, admitted: Admitted) -> GenerationStream:
    """The job's stream, not yet published (first_output publishes it)."""
    if admitted.lease_id is None:
        return GenerationStream(state.inboxes, admitted.request, admitted.spec.work.subject)
    return CoveredStream(state.credit, state.inboxes, admitted.request, admitted.spec.work.subject)


class CoveredStream(GenerationStream):
    """A job covered by a credit lease: its lease is told the job's exact cost when the final chunk
    arrives, or, released without one (the client left, an error, a timeout), that its cost is
    unknown (the worst case stays committed until billing settles the lease)."""

    def __init__(self, credit: CreditLeases, *args: Any):
        super().__init__(*args)
        self._credit = credit

    async def next(self) -> GenerationChunk:
        chunk = await super().next()
        if chunk.kind == "done":
            self._credit.finish(self.request.request_id, chunk.cost_pico)
        return chunk

    async def release(self) -> None:
        try:
            await super().release()
        finally:
            self._credit.finish(self.request.request_id, None)  # no-op once the cost was known


async def first_output(state: GatewayState, admitted: Admitted, stream: GenerationStream) -> GenerationChunk:
    """Publish the job and wait for its first delta or final chunk. A job no router took is recorded
    here (cost 0; billing releases its hold), since no router will."""
    request_id_var.set(admitted.spec.request_id)
    span = tracing.current_span()  # the request's, from the edge middleware; None when not traced
    if span is not None:
        span.set_attributes(tracing.request_attributes(admitted.request, admitted.spec.work.model))
    try:
        await stream.start()
        return await stream.next()
    except NoRouter as exc:
        await record_refusal(state, admitted.spec, exc, admitted.model.id, admitted.reserved_micro)
        await stream.close()
        raise
    except MaxPayloadError:
        # The body passed the size limit but the job made of it (fetched images included) is more
        # than one NATS message: refused like a job no router took, its hold released.
        too_large = PayloadTooLarge(
            f"The request is larger than the {state.nc.max_payload:,} bytes one job may carry; send less "
            "(fewer or smaller images, a shorter conversation)"
        )
        await record_refusal(state, admitted.spec, too_large, admitted.model.id, admitted.reserved_micro)
        await stream.close()
        raise too_large from None


async def chunks(stream: GenerationStream, first: GenerationChunk) -> AsyncIterator[GenerationChunk]:
    """The job's chunks in order, from `first` through the final one (whose counts and cost go on
    the request's span, when traced)."""
    chunk = first
    yield chunk
    while chunk.kind != "done":
        chunk = await stream.next()
        yield chunk
    tracing.record_usage(
        tracing.current_span(), chunk.prompt_tokens, chunk.completion_tokens, chunk.cost_pico, chunk.finish_reason
    )


async def answer_pieces(
    stream: GenerationStream, first: GenerationChunk, reader: AnswerReader
) -> AsyncIterator[list[Piece]]:
    """A chat answer as the engine produces it, a list of pieces per chunk (empty ones skipped);
    `reader.answer` holds the whole answer once this ends."""
    async for chunk in chunks(stream, first):
        pieces = reader.read(chunk)
        if pieces:
            yield pieces


async def whole_answer(stream: GenerationStream, first: GenerationChunk, reader: AnswerReader) -> Answer:
    """A chat answer read whole; the stream is released however that ends."""
    try:
        async for _ in answer_pieces(stream, first, reader):
            pass
    finally:
        await stream.release()
    assert reader.answer is not None
    return reader.answer


async def collect(stream: GenerationStream, first: GenerationChunk) -> tuple[str, GenerationChunk]:
    """The whole text output and its final chunk (counts, finish reason, cost)."""
    parts = []
    async for chunk in chunks(stream, first):
        if chunk.kind == "delta":
            parts.append(chunk.text)
    return "".join(parts), chunk


async def run_binary_job(state: GatewayState, admitted: Admitted) -> tuple[bytes, GenerationChunk]:
    """Dispatch a job whose answer is binary (embedding vectors, a PNG) and read it whole; the
    stream is released however that ends."""
    stream, first = await dispatch(state, admitted)
    try:
        return await collect_binary(stream, first)
    finally:
        await stream.release()


async def collect_binary(stream: GenerationStream, first: GenerationChunk) -> tuple[bytes, GenerationChunk]:
    """A binary result (embedding vectors, a PNG) reassembled from its slices, and the final chunk."""
    parts = []
    async for chunk in chunks(stream, first):
        if chunk.kind == "delta" and chunk.data:
            parts.append(base64.b64decode(chunk.data))
    return b"".join(parts), chunk
