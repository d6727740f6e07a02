"""HTTP routes (OpenAI protocol). Thin: parse, call the domain and the bus, shape the answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from lexora_contracts import subjects
from lexora_contracts.errors import InvalidRequest, LexoraError, ModelNotFound, ModelUnavailable
from lexora_contracts.messages import HealthProbe, HealthReply, ReserveReply, ReserveRequest, UsageEvent
from lexora_contracts.openai import ChatCompletionRequest
from lexora_contracts.registry import ModelRecord
from lexora_gateway import chat
from lexora_gateway.authn import authenticate
from lexora_gateway.dispatch import GenerationStream, NoRouter
from lexora_gateway.errors import invalid_request_from, sse_error_event
from lexora_gateway.state import GatewayState, StateDep
from lexora_runtime.bus import call, publish_usage_event
from lexora_runtime.logs import request_id_var

api = APIRouter()
M = TypeVar("M", bound=BaseModel)

HEALTH_SUBJECTS = {
    "auth": subjects.AUTH_HEALTH,
    "billing": subjects.BILLING_HEALTH,
    "usage": subjects.USAGE_HEALTH,
    "router": subjects.ROUTER_HEALTH,
}


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def parse_body(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid_request_from(exc) from exc


def chat_model(state: GatewayState, model_id: str) -> ModelRecord:
    model = state.registry.get(model_id)
    if model is None:
        raise ModelNotFound(f"The model '{model_id}' does not exist; GET /v1/models lists them", param="model")
    if model.kind != "chat":
        raise InvalidRequest(f"'{model_id}' is a {model.kind} model, not a chat model", param="model")
    if not model.ready_endpoints:
        raise ModelUnavailable(f"No ready instance of {model_id}; retry in 30 seconds")
    return model


@api.post("/chat/completions", response_model=None)
async def chat_completions(request: Request, state: StateDep) -> Response:
    received_at = time.time()
    identity = await authenticate(request, state)
    body = parse_body(ChatCompletionRequest, await request.body())
    model = chat_model(state, body.model)
    max_tokens = chat.resolve_max_tokens(body, model)
    request_id = chat.new_request_id()
    request_id_var.set(request_id)  # carried to billing and the router in NATS headers
    reserved = chat.reservation_micro(body, model, max_tokens)
    if reserved:
        await call(
            state.nc,
            subjects.BILLING_CREDITS_RESERVE,
            ReserveRequest(
                request_id=request_id,
                account_id=identity.account_id,
                amount_micro=reserved,
                ttl_s=state.settings.job_timeout_s + state.settings.reservation_grace_s,
            ),
            ReserveReply,
        )
    job = chat.generation_request(
        body, model, identity, request_id, max_tokens, reserved, received_at, state.settings.job_timeout_s
    )
    stream = GenerationStream(state.nc, job)
    try:
        await stream.start()
        first = await stream.next()
    except NoRouter as exc:
        await _record_unrouted(state, job, exc)
        await stream.close()
        raise
    except BaseException:
        await stream.release()
        raise
    headers = {"X-Request-Id": request_id}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _sse(stream, first, model.id, include_usage), media_type="text/event-stream", headers=headers
        )
    try:
        return JSONBody(await _complete(stream, first, model.id), headers=headers)
    finally:
        await stream.release()


async def _complete(stream: GenerationStream, first: Any, model_id: str) -> dict[str, Any]:
    parts = []
    chunk = first
    while True:
        if chunk.kind == "delta":
            parts.append(chunk.text)
        if chunk.kind == "done":
            break
        chunk = await stream.next()
    usage = chat.usage_block(chunk.prompt_tokens, chunk.completion_tokens, chunk.cost_pico)
    return chat.completion_body(
        stream.request.request_id,
        model_id,
        int(stream.request.received_at),
        "".join(parts),
        chat.openai_finish_reason(chunk.finish_reason),
        usage,
    )


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def _sse(stream: GenerationStream, first: Any, model_id: str, include_usage: bool) -> AsyncIterator[bytes]:
    request_id = stream.request.request_id
    created = int(stream.request.received_at)
    try:
        chunk = first
        yield _event(chat.chunk_body(request_id, model_id, created, {"role": "assistant", "content": chunk.text or ""}))
        while chunk.kind != "done":
            chunk = await stream.next()
            if chunk.kind == "delta" and chunk.text:
                yield _event(chat.chunk_body(request_id, model_id, created, {"content": chunk.text}))
        usage = chat.usage_block(chunk.prompt_tokens, chunk.completion_tokens, chunk.cost_pico)
        finish = chat.openai_finish_reason(chunk.finish_reason)
        if include_usage:
            yield _event(chat.chunk_body(request_id, model_id, created, {}, finish))
            yield _event(chat.chunk_body(request_id, model_id, created, {}, usage=usage, with_choice=False))
        else:
            yield _event(chat.chunk_body(request_id, model_id, created, {}, finish, usage=usage))
        yield b"data: [DONE]\n\n"
    except LexoraError as exc:
        yield sse_error_event(exc)
    finally:
        # A client that disconnected lands here too (the generator is cancelled): stop the engine.
        await stream.release()


async def _record_unrouted(state: GatewayState, job: Any, error: LexoraError) -> None:
    """No router took the job, so the gateway reports its outcome (and billing releases the hold)."""
    await publish_usage_event(
        state.js,
        UsageEvent(
            request_id=job.request_id,
            account_id=job.account_id,
            key_id=job.key_id,
            model=job.model,
            status_code=error.status,
            error_type=error.type,
            reserved_micro=job.reserved_micro,
            stream=job.stream,
            received_at=job.received_at,
            latency_ms=int((time.time() - job.received_at) * 1000),
        ),
    )


@api.get("/models")
async def list_models(state: StateDep) -> Response:
    return JSONBody({"object": "list", "data": [_model_card(m) for m in state.registry.all()]})


def _model_card(model: ModelRecord) -> dict[str, Any]:
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
        "kind": model.kind,
        "context_length": model.context_length,
        "status": model.status,
        "pricing": {
            "input_micro_usd_per_1m_tokens": model.pricing.input_micro_per_mtok,
            "output_micro_usd_per_1m_tokens": model.pricing.output_micro_per_mtok,
        },
    }


@api.get("/health")
async def health(state: StateDep) -> Response:
    async def probe(subject: str) -> dict[str, Any]:
        try:
            reply = await call(state.nc, subject, HealthProbe(), HealthReply, timeout=2.0)
            return reply.model_dump(exclude={"service"})
        except LexoraError as exc:
            return {"status": "down", "error": exc.message}

    results = await asyncio.gather(*(probe(subject) for subject in HEALTH_SUBJECTS.values()))
    checks: dict[str, Any] = {"nats": {"status": "ok" if state.nc.is_connected else "down"}}
    checks.update(zip(HEALTH_SUBJECTS, results, strict=True))
    models = {m.id: m.status for m in state.registry.all()}
    healthy = all(c["status"] == "ok" for c in checks.values())
    return JSONBody(
        {"status": "ok" if healthy else "degraded", "checks": checks, "models": models},
        status_code=200 if healthy else 503,
    )
