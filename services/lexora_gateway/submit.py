"""Starting a chat job, whatever the protocol: model, credit hold, dispatch, first chunk."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import Request

from lexora_contracts import subjects
from lexora_contracts.errors import LexoraError
from lexora_contracts.messages import (
    GenerationChunk,
    Identity,
    ReserveReply,
    ReserveRequest,
    UsageEvent,
)
from lexora_gateway import jobs, ratelimit
from lexora_gateway.dispatch import GenerationStream, NoRouter
from lexora_gateway.state import GatewayState
from lexora_runtime.bus import call, publish_usage_event
from lexora_runtime.logs import request_id_var


async def start_chat_job(
    http: Request, state: GatewayState, identity: Identity, job: jobs.ChatJob, request_id: str, received_at: float
) -> tuple[GenerationStream, GenerationChunk]:
    """Admit, hold credit, dispatch; returns the live stream and its first delta (or final chunk).

    Errors before any output are raised here, so a streaming client still gets a proper HTTP status
    for them. Every outcome is on record exactly once: a job a router took is recorded by that
    router; one refused before dispatch (unknown model, limits, credit) is recorded here, at cost 0.
    """
    request_id_var.set(request_id)  # carried to billing and the router in NATS headers
    try:
        model = await ratelimit.admit_chat(http, state, identity, job.model)
        max_tokens = jobs.resolve_max_tokens(job, model)
        pricing = model.pricing_at(datetime.fromtimestamp(received_at, UTC))  # the price when it arrived
        reserved = jobs.reservation_micro(job, model, pricing, max_tokens)
        if reserved:
            await call(
                state.nc,
                subjects.BILLING_CREDITS_RESERVE,
                ReserveRequest(
                    request_id=request_id,
                    account_id=identity.account_id,
                    amount_micro=reserved,
                    ttl_s=state.settings.job_timeout_s + state.settings.reservation_grace_s,
                    key_id=identity.key_id,
                    key_spend_limit_micro=identity.spend_limit_micro,
                ),
                ReserveReply,
            )
    except LexoraError as exc:
        await _record_failure(state, identity, job, request_id, received_at, exc)
        raise
    request = jobs.generation_request(
        job, model, pricing, identity, request_id, max_tokens, reserved, received_at, state.settings.job_timeout_s
    )
    stream = GenerationStream(state.nc, request)
    try:
        await stream.start()
        first = await stream.next()
    except NoRouter as exc:
        await _record_failure(state, identity, job, request_id, received_at, exc, model.id, reserved)
        await stream.close()
        raise
    except BaseException:
        await stream.release()
        raise
    return stream, first


async def _record_failure(
    state: GatewayState,
    identity: Identity,
    job: jobs.ChatJob,
    request_id: str,
    received_at: float,
    error: LexoraError,
    model_id: str | None = None,
    reserved_micro: int = 0,
) -> None:
    """A request no router took: the gateway records it (cost 0); billing releases any hold."""
    await publish_usage_event(
        state.js,
        UsageEvent(
            request_id=request_id,
            account_id=identity.account_id,
            key_id=identity.key_id,
            model=model_id or job.model,
            endpoint=job.endpoint,
            status_code=error.status,
            error_type=error.type,
            reserved_micro=reserved_micro,
            stream=job.stream,
            received_at=received_at,
            latency_ms=int((time.time() - received_at) * 1000),
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
