"""Starting a job, whatever the protocol: model, limits, credit hold, dispatch, first chunk."""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request

from lexora_contracts import subjects
from lexora_contracts.errors import LexoraError
from lexora_contracts.messages import (
    GenerationChunk,
    Identity,
    UsageEvent,
)
from lexora_contracts.registry import ModelKind, ModelRecord, Pricing
from lexora_gateway.admission import rate_limits
from lexora_gateway.chat import jobs, vision
from lexora_gateway.state import GatewayState
from lexora_router.client import GenerationStream, Job, NoRouter
from lexora_runtime.bus import publish_usage_event
from lexora_runtime.logs import request_id_var


@dataclass(frozen=True)
class JobTicket:
    """What is known of a job before its model is resolved: enough to record a refusal."""

    model_id: str
    kind: ModelKind
    endpoint: str
    stream: bool
    request_id: str
    received_at: float
    subject: str = subjects.ROUTER_GENERATION_START


# Given the model and the price in force, decide the credit hold (may refuse the request) and
# return it with the builder of the router request for that hold.
Prepare = Callable[[ModelRecord, Pricing], tuple[int, Callable[[int], Job]]]


async def start_chat_job(
    http: Request, state: GatewayState, identity: Identity, job: jobs.ChatJob, request_id: str, received_at: float
) -> tuple[GenerationStream, GenerationChunk]:
    """Admit, hold credit, dispatch a chat job; returns the live stream and its first delta (or final chunk)."""

    def prepare(model: ModelRecord, pricing: Pricing) -> tuple[int, Callable[[int], Job]]:
        max_tokens = jobs.resolve_max_tokens(job, model)
        reserved = jobs.reservation_micro(job, model, pricing, max_tokens)
        timeout = state.settings.job_timeout_s
        return reserved, lambda held: jobs.generation_request(
            job, model, pricing, identity, request_id, max_tokens, held, received_at, timeout
        )

    async def images(model: ModelRecord) -> None:
        # Checked, refused without vision, fetched: before the hold, recorded at cost 0 when refused.
        await vision.prepare(job.images, model, state.settings, state.nc.max_payload)

    ticket = JobTicket(job.model, "chat", job.endpoint, job.stream, request_id, received_at)
    return await start_job(http, state, identity, ticket, prepare, images if job.images else None)


async def start_job(
    http: Request,
    state: GatewayState,
    identity: Identity,
    ticket: JobTicket,
    prepare: Prepare,
    admitted: Callable[[ModelRecord], Awaitable[None]] | None = None,
) -> tuple[GenerationStream, GenerationChunk]:
    """Admit, hold credit, dispatch; returns the live stream and its first delta (or final chunk).

    Errors before any output are raised here, so a streaming client still gets a proper HTTP status
    for them. Every outcome is on record exactly once: a job a router took is recorded by that
    router; one refused before dispatch (unknown model, limits, credit) is recorded here, at cost 0.
    """
    request_id, received_at = ticket.request_id, ticket.received_at
    request_id_var.set(request_id)  # carried to billing and the router in NATS headers
    try:
        model = await rate_limits.admit_model(http, state, identity, ticket.model_id, ticket.kind)
        if admitted is not None:  # work the job needs once its model is known (a chat job's images)
            await admitted(model)
        pricing = model.pricing_at(datetime.fromtimestamp(received_at, UTC))  # the price when it arrived
        reserved, build = prepare(model, pricing)
        await hold_credit(state, identity, request_id, reserved)
    except LexoraError as exc:
        await record_refusal(state, identity, ticket, exc)
        raise
    stream = GenerationStream(state.inboxes, build(reserved), ticket.subject)
    try:
        await stream.start()
        first = await stream.next()
    except NoRouter as exc:
        await record_refusal(state, identity, ticket, exc, model.id, reserved)
        await stream.close()
        raise
    except BaseException:
        await stream.release()
        raise
    return stream, first


async def hold_credit(state: GatewayState, identity: Identity, request_id: str, amount_micro: int) -> None:
    """Hold credit for one job (402 when the account or the key's spend limit cannot cover it).
    Free models hold nothing."""
    if not amount_micro:
        return
    ttl_s = state.settings.job_timeout_s + state.settings.reservation_grace_s
    await state.billing.hold(identity, request_id, amount_micro, ttl_s)


async def record_refusal(
    state: GatewayState,
    identity: Identity,
    ticket: JobTicket,
    error: LexoraError,
    model_id: str | None = None,
    reserved_micro: int = 0,
) -> None:
    """A request no router took: the gateway records it (cost 0); billing releases any hold."""
    await publish_usage_event(
        state.js,
        UsageEvent(
            request_id=ticket.request_id,
            account_id=identity.account_id,
            key_id=identity.key_id,
            model=model_id or ticket.model_id,
            endpoint=ticket.endpoint,
            status_code=error.status,
            error_type=error.type,
            reserved_micro=reserved_micro,
            stream=ticket.stream,
            received_at=ticket.received_at,
            latency_ms=int((time.time() - ticket.received_at) * 1000),
        ),
    )


async def collect(stream: GenerationStream, first: GenerationChunk) -> tuple[str, GenerationChunk]:
    """The whole answer and its final chunk (counts, finish reason, cost)."""
    parts = []
    chunk = first
    while True:
        if chunk.kind == "delta":
            parts.append(chunk.text)
        if chunk.kind == "done":
            return "".join(parts), chunk
        chunk = await stream.next()


async def collect_binary(stream: GenerationStream, first: GenerationChunk) -> tuple[bytes, GenerationChunk]:
    """A binary result (embedding vectors, a PNG) reassembled from its slices, and the final chunk."""
    parts = []
    chunk = first
    while True:
        if chunk.kind == "delta" and chunk.data:
            parts.append(base64.b64decode(chunk.data))
        if chunk.kind == "done":
            return b"".join(parts), chunk
        chunk = await stream.next()
