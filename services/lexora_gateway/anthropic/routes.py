"""Anthropic Messages routes. Thin: parse, translate to a chat job, emit Anthropic's events.

The `?beta=true` query and the `anthropic-beta` / `anthropic-version` headers are accepted and
read by nothing: what the betas turn on is in the body, and the body is what we honour."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from lexora_contracts.messages import CountTokensRequest as EngineCountRequest
from lexora_gateway.admission.admit import JobSpec, admit_and_hold, find_model, serving_model
from lexora_gateway.admission.identity import CurrentIdentity
from lexora_gateway.anthropic import message_answers, translation
from lexora_gateway.anthropic.schemas import CountTokensRequest, MessagesRequest
from lexora_gateway.chat import vision
from lexora_gateway.chat.image_inputs import PendingImage
from lexora_gateway.chat.jobs import max_tokens_headers
from lexora_gateway.dispatch import dispatch
from lexora_gateway.http import JSONBody, ReceivedAt, parse_body
from lexora_gateway.state import StateDep

router = APIRouter()


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
    return await message_answers.respond(stream, first, job, body.model, headers)


@router.post("/messages/count_tokens")
async def count_tokens(request: Request, identity: CurrentIdentity, state: StateDep) -> Response:
    body = parse_body(CountTokensRequest, await request.body())
    model = serving_model(find_model(state, body.model), body.model, "chat")
    images: list[PendingImage] = []
    turns = translation.count_turns(body, images)
    await vision.prepare(images, model, state.settings, state.nc.max_payload)  # the engine counts them too
    reply = await state.router.count_tokens(
        EngineCountRequest(model=model.id, messages=turns, reasoning_budget=translation.count_budget(body, model))
    )
    return JSONBody({"input_tokens": reply.input_tokens}, headers=translation.ignored_tools_header(body))
