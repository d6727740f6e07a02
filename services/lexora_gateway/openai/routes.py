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
from lexora_gateway.chat.reasoning import splits_output
from lexora_gateway.chat.tools import ToolUse, parse_call
from lexora_gateway.dispatch import collect, dispatch
from lexora_gateway.errors import sse_error_event
from lexora_gateway.http import JSONBody, ReceivedAt, parse_body
from lexora_gateway.openai import completion_batch, reasoning, translation
from lexora_gateway.openai.schemas import ChatCompletionRequest, CompletionRequest
from lexora_gateway.state import StateDep
from lexora_router.client import GenerationStream

router = APIRouter()
CALL_ID_PREFIX = "call_"


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
    if splits_output(stream.request):  # a reasoning model: reasoning apart from the answer
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await reasoning.respond(stream, first, job, include_usage, headers, CALL_ID_PREFIX)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = (
            _sse_with_tools(stream, first, stream.request.model, include_usage, job.tools)
            if job.tools.active
            else _sse(stream, first, stream.request.model, include_usage)
        )
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    try:
        text, done = await collect(stream, first)
    finally:
        await stream.release()
    return JSONBody(
        translation.completion_body(
            request_id,
            stream.request.model,
            int(received_at),
            text,
            translation.openai_finish_reason(done.finish_reason),
            translation.usage_block(done.prompt_tokens, done.completion_tokens, done.cost_pico),
            parse_call(text, job.tools, CALL_ID_PREFIX),
        ),
        headers=headers,
    )


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _ending(stream: GenerationStream, model_id: str, finish: str, done: GenerationChunk, include_usage: bool) -> bytes:
    """The finish chunk with usage (or, with include_usage, a separate usage chunk), then [DONE]."""
    request_id, created = stream.request.request_id, int(stream.request.received_at)
    usage = translation.usage_block(done.prompt_tokens, done.completion_tokens, done.cost_pico)
    chunk_body = translation.chunk_body
    if include_usage:
        events = [
            _event(chunk_body(request_id, model_id, created, {}, finish)),
            _event(chunk_body(request_id, model_id, created, {}, usage=usage, with_choice=False)),
        ]
    else:
        events = [_event(chunk_body(request_id, model_id, created, {}, finish, usage=usage))]
    return b"".join(events) + b"data: [DONE]\n\n"


async def _sse(
    stream: GenerationStream, first: GenerationChunk, model_id: str, include_usage: bool
) -> AsyncIterator[bytes]:
    request_id = stream.request.request_id
    created = int(stream.request.received_at)
    chunk_body = translation.chunk_body
    try:
        chunk = first
        yield _event(chunk_body(request_id, model_id, created, {"role": "assistant", "content": chunk.text or ""}))
        while chunk.kind != "done":
            chunk = await stream.next()
            if chunk.kind == "delta" and chunk.text:
                yield _event(chunk_body(request_id, model_id, created, {"content": chunk.text}))
        finish = translation.openai_finish_reason(chunk.finish_reason)
        yield _ending(stream, model_id, finish, chunk, include_usage)
    except LexoraError as exc:
        yield sse_error_event(exc)
    finally:
        # A client that disconnected lands here too (the generator is cancelled): stop the engine.
        await stream.release()


async def _sse_with_tools(
    stream: GenerationStream, first: GenerationChunk, model_id: str, include_usage: bool, tools: ToolUse
) -> AsyncIterator[bytes]:
    """With tools offered, the answer is read whole before it is sent: only then is it known
    whether it is a tool call or prose."""
    request_id = stream.request.request_id
    created = int(stream.request.received_at)
    chunk_body = translation.chunk_body
    try:
        text, done = await collect(stream, first)
        call = parse_call(text, tools, CALL_ID_PREFIX)
        if call is None:
            yield _event(chunk_body(request_id, model_id, created, {"role": "assistant", "content": text}))
            finish = translation.openai_finish_reason(done.finish_reason)
        else:
            opening = {**translation.tool_call_body(call), "function": {"name": call.name, "arguments": ""}}
            yield _event(
                chunk_body(
                    request_id, model_id, created, {"role": "assistant", "content": None, "tool_calls": [opening]}
                )
            )
            arguments = {"index": 0, "function": {"arguments": call.arguments_json}}
            yield _event(chunk_body(request_id, model_id, created, {"tool_calls": [arguments]}))
            finish = "tool_calls"
        yield _ending(stream, model_id, finish, done, include_usage)
    except LexoraError as exc:
        yield sse_error_event(exc)
    finally:
        await stream.release()


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
        chunk = first
        if chunk.text:
            yield _event(body(request_id, model_id, created, chunk.text, None, None))
        while chunk.kind != "done":
            chunk = await stream.next()
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
