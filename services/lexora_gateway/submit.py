"""Starting a chat job, whatever the protocol: model, credit hold, dispatch, first chunk."""

from __future__ import annotations

import time

from lexora_contracts import subjects
from lexora_contracts.errors import LexoraError
from lexora_contracts.messages import (
    GenerationChunk,
    GenerationRequest,
    Identity,
    ReserveReply,
    ReserveRequest,
    UsageEvent,
)
from lexora_contracts.registry import ModelRecord
from lexora_gateway import jobs
from lexora_gateway.dispatch import GenerationStream, NoRouter
from lexora_gateway.state import GatewayState
from lexora_runtime.bus import call, publish_usage_event
from lexora_runtime.logs import request_id_var


async def start_chat_job(
    state: GatewayState, identity: Identity, job: jobs.ChatJob, model: ModelRecord, request_id: str, received_at: float
) -> tuple[GenerationStream, GenerationChunk]:
    """Returns the live stream and its first delta (or final chunk). Errors before any output are
    raised here, so a streaming client still gets a proper HTTP status for them."""
    request_id_var.set(request_id)  # carried to billing and the router in NATS headers
    max_tokens = jobs.resolve_max_tokens(job, model)
    reserved = jobs.reservation_micro(job, model, max_tokens)
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
    request = jobs.generation_request(
        job, model, identity, request_id, max_tokens, reserved, received_at, state.settings.job_timeout_s
    )
    stream = GenerationStream(state.nc, request)
    try:
        await stream.start()
        first = await stream.next()
    except NoRouter as exc:
        await _record_unrouted(state, request, exc)
        await stream.close()
        raise
    except BaseException:
        await stream.release()
        raise
    return stream, first


async def _record_unrouted(state: GatewayState, request: GenerationRequest, error: LexoraError) -> None:
    """No router took the job, so the gateway reports its outcome (and billing releases the hold)."""
    await publish_usage_event(
        state.js,
        UsageEvent(
            request_id=request.request_id,
            account_id=request.account_id,
            key_id=request.key_id,
            model=request.model,
            endpoint=request.endpoint,
            status_code=error.status,
            error_type=error.type,
            reserved_micro=request.reserved_micro,
            stream=request.stream,
            received_at=request.received_at,
            latency_ms=int((time.time() - request.received_at) * 1000),
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
