"""OpenAI chat answers from a reasoning model: the reasoning in `message.reasoning` (OpenRouter)
and `message.reasoning_content` (DeepSeek), streamed as `delta.reasoning`, left out when the
request says `reasoning.exclude`; the answer in `content` (or a tool call) as usual."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi.responses import Response, StreamingResponse

from lexora_contracts.errors import LexoraError
from lexora_contracts.messages import GenerationChunk
from lexora_gateway.chat.jobs import ChatJob
from lexora_gateway.chat.reasoning import ReasoningTracker
from lexora_gateway.chat.tools import parse_call
from lexora_gateway.dispatch import collect
from lexora_gateway.errors import sse_error_event
from lexora_gateway.http import JSONBody
from lexora_gateway.openai import translation
from lexora_router.client import GenerationStream


def _excluded(job: ChatJob) -> bool:
    return bool(job.reasoning and job.reasoning.exclude)


async def respond(
    stream: GenerationStream,
    first: GenerationChunk,
    job: ChatJob,
    include_usage: bool,
    headers: dict[str, str],
    call_id_prefix: str,
) -> Response:
    if job.stream:
        events = _sse(stream, first, job, include_usage, call_id_prefix)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    try:
        text, done = await collect(stream, first)
    finally:
        await stream.release()
    tracker = ReasoningTracker()
    reasoning, answer = tracker.split(text, done.completion_tokens)
    request = stream.request
    usage = translation.usage_block(done.prompt_tokens, done.completion_tokens, done.cost_pico)
    body = translation.completion_body(
        request.request_id,
        request.model,
        int(request.received_at),
        answer,
        translation.openai_finish_reason(done.finish_reason),
        with_reasoning_tokens(usage, tracker.reasoning_tokens),
        parse_call(answer, job.tools, call_id_prefix),
    )
    body["choices"][0]["message"].update(reasoning_fields(reasoning, _excluded(job)))
    return JSONBody(body, headers=headers)


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def _sse(
    stream: GenerationStream, first: GenerationChunk, job: ChatJob, include_usage: bool, call_id_prefix: str
) -> AsyncIterator[bytes]:
    """Reasoning streams as it comes. The answer does too, unless tools are offered: then it is read
    whole, since only then is it known whether it is a tool call or prose."""
    request = stream.request
    request_id, model_id, created = request.request_id, request.model, int(request.received_at)
    exclude, hold_answer = _excluded(job), job.tools.active
    tracker = ReasoningTracker()
    held: list[str] = []

    def deltas(reasoning: str, answer: str) -> bytes:
        out = b""
        fields = reasoning_fields(reasoning, exclude)
        if fields:
            out += _event(translation.chunk_body(request_id, model_id, created, fields))
        if answer and hold_answer:
            held.append(answer)
        elif answer:
            out += _event(translation.chunk_body(request_id, model_id, created, {"content": answer}))
        return out

    try:
        yield _event(translation.chunk_body(request_id, model_id, created, {"role": "assistant", "content": ""}))
        chunk = first
        while True:
            if chunk.kind == "delta" and chunk.text:
                out = deltas(*tracker.feed(chunk.text, chunk.completion_tokens))
                if out:
                    yield out
            if chunk.kind == "done":
                break
            chunk = await stream.next()
        out = deltas(*tracker.finish(chunk.completion_tokens))
        finish = translation.openai_finish_reason(chunk.finish_reason)
        if hold_answer:
            answer_events, called = _held_answer("".join(held), job, call_id_prefix, request_id, model_id, created)
            out += answer_events
            finish = "tool_calls" if called else finish
        usage = translation.usage_block(chunk.prompt_tokens, chunk.completion_tokens, chunk.cost_pico)
        usage = with_reasoning_tokens(usage, tracker.reasoning_tokens)
        yield out + _ending(request_id, model_id, created, finish, usage, include_usage)
    except LexoraError as exc:
        yield sse_error_event(exc)
    finally:
        await stream.release()


def _held_answer(
    answer: str, job: ChatJob, call_id_prefix: str, request_id: str, model_id: str, created: int
) -> tuple[bytes, bool]:
    """The answer read whole, as prose or as a tool call (then True)."""
    call = parse_call(answer, job.tools, call_id_prefix)
    if call is None:
        return _event(translation.chunk_body(request_id, model_id, created, {"content": answer})), False
    opening = {**translation.tool_call_body(call), "function": {"name": call.name, "arguments": ""}}
    arguments = {"index": 0, "function": {"arguments": call.arguments_json}}
    events = _event(
        translation.chunk_body(request_id, model_id, created, {"content": None, "tool_calls": [opening]})
    ) + _event(translation.chunk_body(request_id, model_id, created, {"tool_calls": [arguments]}))
    return events, True


def _ending(
    request_id: str, model_id: str, created: int, finish: str, usage: dict[str, Any], include_usage: bool
) -> bytes:
    chunk_body = translation.chunk_body
    if include_usage:
        events = _event(chunk_body(request_id, model_id, created, {}, finish)) + _event(
            chunk_body(request_id, model_id, created, {}, usage=usage, with_choice=False)
        )
    else:
        events = _event(chunk_body(request_id, model_id, created, {}, finish, usage=usage))
    return events + b"data: [DONE]\n\n"


def reasoning_fields(reasoning: str, exclude: bool) -> dict[str, str]:
    """The message (or delta) fields carrying reasoning: OpenRouter's `reasoning` and, for clients
    written against DeepSeek's API, `reasoning_content`. Omitted when empty or excluded."""
    if not reasoning or exclude:
        return {}
    return {"reasoning": reasoning, "reasoning_content": reasoning}


def with_reasoning_tokens(usage: dict[str, Any], reasoning_tokens: int | None) -> dict[str, Any]:
    """OpenAI's usage with `completion_tokens_details.reasoning_tokens`, when the count is known."""
    if reasoning_tokens is None:
        return usage
    return {**usage, "completion_tokens_details": {"reasoning_tokens": reasoning_tokens}}
