"""Anthropic Messages routes. Thin: parse, translate to a chat job, emit Anthropic's events.

The `?beta=true` query and the `anthropic-beta` / `anthropic-version` headers are accepted and
read by nothing: what the betas turn on is in the body, and the body is what we honour."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from lexora_contracts.errors import LexoraError
from lexora_contracts.messages import CountTokensRequest as EngineCountRequest
from lexora_contracts.messages import GenerationChunk
from lexora_gateway.admission import rate_limits
from lexora_gateway.admission.admit import JobSpec, admit_and_hold, find_model, serving_model
from lexora_gateway.admission.identity import CurrentIdentity
from lexora_gateway.anthropic import reasoning, translation
from lexora_gateway.anthropic.schemas import CountTokensRequest, MessagesRequest
from lexora_gateway.chat import vision
from lexora_gateway.chat.image_inputs import PendingImage
from lexora_gateway.chat.jobs import ChatJob, max_tokens_headers
from lexora_gateway.chat.reasoning import splits_output
from lexora_gateway.chat.tools import parse_call
from lexora_gateway.dispatch import collect, dispatch
from lexora_gateway.errors import anthropic_sse_error_event
from lexora_gateway.http import JSONBody, ReceivedAt, parse_body
from lexora_gateway.state import StateDep
from lexora_router.client import GenerationStream

router = APIRouter()
TOOL_ID_PREFIX = "toolu_"


@router.post("/messages", response_model=None)
async def create_message(
    request: Request, received_at: ReceivedAt, identity: CurrentIdentity, state: StateDep
) -> Response:
    body = parse_body(MessagesRequest, await request.body())
    message_id = translation.new_message_id()
    job = translation.to_job(body)
    admitted = await admit_and_hold(request, state, JobSpec(identity, message_id, received_at, job))
    stream, first = await dispatch(state, admitted)
    headers = {
        "request-id": message_id,
        **translation.ignored_tools_header(body),
        **max_tokens_headers(job, stream.request, first),
    }
    if splits_output(stream.request):  # a reasoning model: thinking blocks before the answer
        return await reasoning.respond(stream, first, job, body.model, headers, TOOL_ID_PREFIX)
    if body.stream:
        events = (
            _events_with_tools(stream, first, body.model, job)
            if job.tools.active
            else _events(stream, first, body.model)
        )
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    try:
        text, done = await collect(stream, first)
    finally:
        await stream.release()
    usage = translation.usage_block(done.prompt_tokens, done.completion_tokens, done.cost_pico)
    call = parse_call(text, job.tools, TOOL_ID_PREFIX)
    return JSONBody(
        translation.message_body(message_id, body.model, text, done.finish_reason, done.stop_sequence, usage, call),
        headers=headers,
    )


async def _events(stream: GenerationStream, first: GenerationChunk, requested_model: str) -> AsyncIterator[bytes]:
    try:
        chunk = first
        yield translation.message_start(stream.request.request_id, requested_model, chunk.prompt_tokens)
        yield translation.text_block_start()
        yield translation.ping()
        if chunk.text:
            yield translation.text_delta(chunk.text)
        while chunk.kind != "done":
            chunk = await stream.next()
            if chunk.kind == "delta" and chunk.text:
                yield translation.text_delta(chunk.text)
        yield translation.block_stop()
        usage = translation.usage_block(chunk.prompt_tokens, chunk.completion_tokens, chunk.cost_pico)
        yield translation.message_delta(chunk.finish_reason, chunk.stop_sequence, usage)
        yield translation.message_stop()
    except LexoraError as exc:
        yield anthropic_sse_error_event(exc)
    finally:
        await stream.release()


async def _events_with_tools(
    stream: GenerationStream, first: GenerationChunk, requested_model: str, job: ChatJob
) -> AsyncIterator[bytes]:
    """With tools offered, the answer is read whole first: only then is it known whether it is a
    tool_use block or text."""
    try:
        yield translation.message_start(stream.request.request_id, requested_model, first.prompt_tokens)
        yield translation.ping()
        text, done = await collect(stream, first)
        call = parse_call(text, job.tools, TOOL_ID_PREFIX)
        if call is not None:
            yield translation.tool_use_events(call)
        else:
            yield translation.text_block_start() + translation.text_delta(text) + translation.block_stop()
        usage = translation.usage_block(done.prompt_tokens, done.completion_tokens, done.cost_pico)
        yield translation.message_delta(done.finish_reason, done.stop_sequence, usage, call)
        yield translation.message_stop()
    except LexoraError as exc:
        yield anthropic_sse_error_event(exc)
    finally:
        await stream.release()


@router.post("/messages/count_tokens")
async def count_tokens(request: Request, identity: CurrentIdentity, state: StateDep) -> Response:
    await rate_limits.peek(request, state, identity)
    body = parse_body(CountTokensRequest, await request.body())
    model = serving_model(find_model(state, body.model), body.model, "chat")
    images: list[PendingImage] = []
    turns = translation.count_turns(body, images)
    await vision.prepare(images, model, state.settings, state.nc.max_payload)  # the engine counts them too
    reply = await state.router.count_tokens(
        EngineCountRequest(model=model.id, messages=turns, reasoning_budget=translation.count_budget(body, model))
    )
    return JSONBody({"input_tokens": reply.input_tokens}, headers=translation.ignored_tools_header(body))
