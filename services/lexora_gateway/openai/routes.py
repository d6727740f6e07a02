"""OpenAI protocol routes. Thin: parse, translate to a chat job, shape the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from lexora_contracts.errors import LexoraError
from lexora_contracts.messages import GenerationChunk
from lexora_gateway.admission.admit import JobSpec, admit_and_hold
from lexora_gateway.admission.identity import CurrentIdentity
from lexora_gateway.chat.jobs import max_tokens_headers
from lexora_gateway.dispatch import chunks, collect, dispatch
from lexora_gateway.errors import sse_error_event
from lexora_gateway.http import JSONBody, ReceivedAt, parse_body
from lexora_gateway.openai import chat_answers, completion_batch, translation
from lexora_gateway.openai.schemas import ChatCompletionRequest, CompletionRequest
from lexora_gateway.state import StateDep
from lexora_router.client import GenerationStream

router = APIRouter()


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    request: Request, received_at: ReceivedAt, identity: CurrentIdentity, state: StateDep
) -> Response:
    body = parse_body(ChatCompletionRequest, await request.body())
    request_id = translation.new_request_id()
    job = translation.to_job(body)
    admitted = await admit_and_hold(request, state, JobSpec(identity, request_id, received_at, job))
    stream, first = await dispatch(state, admitted)
    headers = {"X-Request-Id": request_id, **max_tokens_headers(job, stream.request, first)}
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await chat_answers.respond(stream, first, job, include_usage, headers)


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


@router.post("/completions", response_model=None)
async def completions(
    request: Request, received_at: ReceivedAt, identity: CurrentIdentity, state: StateDep
) -> Response:
    """The legacy text completion: a raw prompt, continued by the model without a chat template."""
    body = parse_body(CompletionRequest, await request.body())
    if not completion_batch.is_single(body):  # several prompts: one choice (and job) each
        return await completion_batch.complete(request, state, identity, body, received_at)
    request_id = translation.new_request_id("cmpl")
    job = translation.completion_to_job(body)
    admitted = await admit_and_hold(request, state, JobSpec(identity, request_id, received_at, job))
    stream, first = await dispatch(state, admitted)
    headers = {"X-Request-Id": request_id, **max_tokens_headers(job, stream.request, first)}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _completion_sse(stream, first, include_usage), media_type="text/event-stream", headers=headers
        )
    try:
        text, done = await collect(stream, first)
    finally:
        await stream.release()
    usage = translation.usage_block(done.prompt_tokens, done.completion_tokens, done.cost_pico)
    finish = translation.openai_finish_reason(done.finish_reason)
    return JSONBody(
        translation.text_completion_body(request_id, stream.request.model, int(received_at), text, finish, usage),
        headers=headers,
    )


async def _completion_sse(
    stream: GenerationStream, first: GenerationChunk, include_usage: bool
) -> AsyncIterator[bytes]:
    request_id, model_id = stream.request.request_id, stream.request.model
    created = int(stream.request.received_at)
    body = translation.text_completion_body
    try:
        async for chunk in chunks(stream, first):
            if chunk.kind == "delta" and chunk.text:
                yield _event(body(request_id, model_id, created, chunk.text, None, None))
        usage = translation.usage_block(chunk.prompt_tokens, chunk.completion_tokens, chunk.cost_pico)
        finish = translation.openai_finish_reason(chunk.finish_reason)
        last = body(request_id, model_id, created, "", finish, None if include_usage else usage)
        yield _event(last)
        if include_usage:
            yield _event({**body(request_id, model_id, created, "", None, usage), "choices": []})
        yield b"data: [DONE]\n\n"
    except LexoraError as exc:
        yield sse_error_event(exc)
    finally:
        await stream.release()
