"""Anthropic Messages routes. Thin: parse, translate to a chat job, emit Anthropic's events."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from lexora_contracts import subjects
from lexora_contracts.anthropic import CountTokensRequest, MessagesRequest
from lexora_contracts.errors import LexoraError
from lexora_contracts.messages import CountTokensReply, GenerationChunk
from lexora_contracts.messages import CountTokensRequest as EngineCountRequest
from lexora_gateway import anthropic_chat as fmt
from lexora_gateway.authn import authenticate
from lexora_gateway.dispatch import GenerationStream
from lexora_gateway.errors import anthropic_sse_error_event
from lexora_gateway.http import JSONBody, parse_body
from lexora_gateway.jobs import chat_model
from lexora_gateway.state import StateDep
from lexora_gateway.submit import start_chat_job
from lexora_runtime.bus import call

router = APIRouter()
COUNT_TIMEOUT_S = 30.0


@router.post("/messages", response_model=None)
async def create_message(request: Request, state: StateDep) -> Response:
    received_at = time.time()
    identity = await authenticate(request, state)
    body = parse_body(MessagesRequest, await request.body())
    message_id = fmt.new_message_id()
    stream, first, _ = await start_chat_job(state, identity, fmt.to_job(body), message_id, received_at)
    headers = {"request-id": message_id}
    if body.stream:
        return StreamingResponse(_events(stream, first, body.model), media_type="text/event-stream", headers=headers)
    try:
        parts = []
        chunk = first
        while True:
            if chunk.kind == "delta":
                parts.append(chunk.text)
            if chunk.kind == "done":
                break
            chunk = await stream.next()
    finally:
        await stream.release()
    usage = fmt.usage_block(chunk.prompt_tokens, chunk.completion_tokens, chunk.cost_pico)
    return JSONBody(
        fmt.message_body(message_id, body.model, "".join(parts), chunk.finish_reason, chunk.stop_sequence, usage),
        headers=headers,
    )


async def _events(stream: GenerationStream, first: GenerationChunk, requested_model: str) -> AsyncIterator[bytes]:
    try:
        chunk = first
        yield fmt.message_start(stream.request.request_id, requested_model, chunk.prompt_tokens)
        yield fmt.text_block_start()
        yield fmt.ping()
        if chunk.text:
            yield fmt.text_delta(chunk.text)
        while chunk.kind != "done":
            chunk = await stream.next()
            if chunk.kind == "delta" and chunk.text:
                yield fmt.text_delta(chunk.text)
        yield fmt.block_stop()
        usage = fmt.usage_block(chunk.prompt_tokens, chunk.completion_tokens, chunk.cost_pico)
        yield fmt.message_delta(chunk.finish_reason, chunk.stop_sequence, usage)
        yield fmt.message_stop()
    except LexoraError as exc:
        yield anthropic_sse_error_event(exc)
    finally:
        await stream.release()


@router.post("/messages/count_tokens")
async def count_tokens(request: Request, state: StateDep) -> Response:
    await authenticate(request, state)
    body = parse_body(CountTokensRequest, await request.body())
    model = chat_model(state.registry.get(body.model), body.model)
    reply = await call(
        state.nc,
        subjects.ROUTER_TOKENS_COUNT,
        EngineCountRequest(model=model.id, messages=fmt.count_turns(body)),
        CountTokensReply,
        timeout=COUNT_TIMEOUT_S,
    )
    return JSONBody({"input_tokens": reply.input_tokens})
