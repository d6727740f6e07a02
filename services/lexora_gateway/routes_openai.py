"""OpenAI protocol routes. Thin: parse, translate to a chat job, shape the answer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from lexora_contracts.errors import LexoraError
from lexora_contracts.messages import GenerationChunk
from lexora_contracts.openai import ChatCompletionRequest
from lexora_gateway import openai_chat
from lexora_gateway.authn import authenticate
from lexora_gateway.dispatch import GenerationStream
from lexora_gateway.errors import sse_error_event
from lexora_gateway.http import JSONBody, parse_body
from lexora_gateway.state import StateDep
from lexora_gateway.submit import start_chat_job

router = APIRouter()


@router.post("/chat/completions", response_model=None)
async def chat_completions(request: Request, state: StateDep) -> Response:
    received_at = time.time()
    identity = await authenticate(request, state)
    body = parse_body(ChatCompletionRequest, await request.body())
    request_id = openai_chat.new_request_id()
    stream, first, model = await start_chat_job(state, identity, openai_chat.to_job(body), request_id, received_at)
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


async def _complete(stream: GenerationStream, first: GenerationChunk, model_id: str) -> dict[str, Any]:
    parts = []
    chunk = first
    while True:
        if chunk.kind == "delta":
            parts.append(chunk.text)
        if chunk.kind == "done":
            break
        chunk = await stream.next()
    usage = openai_chat.usage_block(chunk.prompt_tokens, chunk.completion_tokens, chunk.cost_pico)
    return openai_chat.completion_body(
        stream.request.request_id,
        model_id,
        int(stream.request.received_at),
        "".join(parts),
        openai_chat.openai_finish_reason(chunk.finish_reason),
        usage,
    )


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def _sse(
    stream: GenerationStream, first: GenerationChunk, model_id: str, include_usage: bool
) -> AsyncIterator[bytes]:
    request_id = stream.request.request_id
    created = int(stream.request.received_at)
    chunk_body = openai_chat.chunk_body
    try:
        chunk = first
        yield _event(chunk_body(request_id, model_id, created, {"role": "assistant", "content": chunk.text or ""}))
        while chunk.kind != "done":
            chunk = await stream.next()
            if chunk.kind == "delta" and chunk.text:
                yield _event(chunk_body(request_id, model_id, created, {"content": chunk.text}))
        usage = openai_chat.usage_block(chunk.prompt_tokens, chunk.completion_tokens, chunk.cost_pico)
        finish = openai_chat.openai_finish_reason(chunk.finish_reason)
        if include_usage:
            yield _event(chunk_body(request_id, model_id, created, {}, finish))
            yield _event(chunk_body(request_id, model_id, created, {}, usage=usage, with_choice=False))
        else:
            yield _event(chunk_body(request_id, model_id, created, {}, finish, usage=usage))
        yield b"data: [DONE]\n\n"
    except LexoraError as exc:
        yield sse_error_event(exc)
    finally:
        # A client that disconnected lands here too (the generator is cancelled): stop the engine.
        await stream.release()
