"""OpenAI Responses API routes: `POST /v1/responses` (a chat job, admitted and dispatched as chat
completions are), `GET` and `DELETE /v1/responses/{id}` for stored responses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from lexora_contracts.errors import LexoraError, NotFound
from lexora_contracts.messages import GenerationChunk
from lexora_gateway.admission.admit import JobSpec, admit_and_hold
from lexora_gateway.admission.identity import CurrentIdentity
from lexora_gateway.chat.answer import AnswerReader, Piece, ReasoningPiece
from lexora_gateway.chat.jobs import ChatJob, max_tokens_headers
from lexora_gateway.chat.reasoning import splits_output
from lexora_gateway.chat.tool_stream import CallArguments, CallOpened, TextPiece
from lexora_gateway.dispatch import answer_pieces, dispatch
from lexora_gateway.http import JSONBody, ReceivedAt, parse_body
from lexora_gateway.openai import responses_translation as rt
from lexora_gateway.openai.responses_events import ResponseEvents
from lexora_gateway.openai.responses_schemas import ResponsesRequest
from lexora_gateway.state import GatewayState, StateDep
from lexora_router.client import GenerationStream

router = APIRouter()


@router.post("/responses", response_model=None)
async def create_response(
    request: Request, received_at: ReceivedAt, identity: CurrentIdentity, state: StateDep
) -> Response:
    body = parse_body(ResponsesRequest, await request.body())
    history: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        previous = await state.responses.get(identity.account_id, body.previous_response_id)
        if previous is None:
            raise NotFound(
                f"Previous response with id '{body.previous_response_id}' not found", param="previous_response_id"
            )
        history = previous.conversation()
    earlier = rt.items_from_store(history)
    job = rt.to_job(body, earlier)
    response_id = rt.new_id("resp")
    admitted = await admit_and_hold(request, state, JobSpec(identity, response_id, received_at, job))
    stream, first = await dispatch(state, admitted)
    headers = {
        "X-Request-Id": response_id,
        **rt.ignored_tools_header(body),
        **max_tokens_headers(job, stream.request, first),
    }
    skeleton = partial(rt.response_body, body, response_id, stream.request.model, int(received_at))
    events = ResponseEvents(skeleton, rt.wants_summary(body), rt.wants_encrypted_reasoning(body))
    kept = _Keeper(state, identity.account_id, body, [*history, *rt.dump_items(rt.input_items(body))])
    answer = _answer(stream, first, job, events, kept)
    if body.stream:
        return StreamingResponse(answer, media_type="text/event-stream", headers=headers)
    try:
        async for _ in answer:  # the same steps, the events unsent
            pass
    except _Failed as failed:
        raise failed.error from None
    assert events.final is not None
    return JSONBody(events.final, headers=headers)


class _Failed(Exception):
    """A non-streaming answer's error, carried out of the event generator."""

    def __init__(self, error: LexoraError):
        self.error = error


class _Keeper:
    """Keeps a finished response when `store` asks for it."""

    def __init__(self, state: GatewayState, account_id: str, body: ResponsesRequest, items: list[dict[str, Any]]):
        self.state, self.account_id, self.store, self.items = state, account_id, body.store, items

    async def keep(self, response: dict[str, Any]) -> None:
        if self.store:
            await self.state.responses.put(self.account_id, response, self.items)


async def _answer(
    stream: GenerationStream, first: GenerationChunk, job: ChatJob, events: ResponseEvents, kept: _Keeper
) -> AsyncIterator[bytes]:
    """The answer as events: reasoning, text and function calls as they are generated."""
    reader = AnswerReader(job.tools, splits_output(stream.request), rt.CALL_ID_PREFIX)
    try:
        yield events.start()
        async for pieces in answer_pieces(stream, first, reader):
            out = b"".join(_event_of(events, piece) for piece in pieces)
            if out:
                yield out
        answer = reader.answer
        assert answer is not None
        done = answer.done
        written = answer.text + "".join(call.arguments_json for call in answer.calls)
        reasoning_tokens = rt.reasoning_token_count(
            answer.reasoning_tokens, answer.reasoning, written, done.completion_tokens
        )
        usage = rt.usage_block(done.prompt_tokens, done.completion_tokens, done.cost_pico, reasoning_tokens)
        out = events.complete(done.finish_reason, usage)
        assert events.final is not None
        await kept.keep(events.final)
        yield out
    except LexoraError as exc:
        if not job.stream:
            raise _Failed(exc) from exc
        yield events.fail(exc.code, exc.message)
    finally:
        # A client that disconnected lands here too (the generator is closed): stop the engine.
        await stream.release()


def _event_of(events: ResponseEvents, piece: Piece) -> bytes:
    if isinstance(piece, ReasoningPiece):
        return events.reasoning(piece.text)
    if isinstance(piece, TextPiece):
        return events.text(piece.text)
    if isinstance(piece, CallOpened):
        return events.call_opened(piece.call_id, piece.name)
    if isinstance(piece, CallArguments):
        return events.call_arguments(piece.text)
    return events.close()  # CallClosed


@router.get("/responses/{response_id}")
async def get_response(request: Request, response_id: str, identity: CurrentIdentity, state: StateDep) -> Response:
    stored = await state.responses.get(identity.account_id, response_id)
    if stored is None:
        raise _not_found(response_id)
    return JSONBody(stored.response)


@router.get("/responses/{response_id}/input_items")
async def list_input_items(request: Request, response_id: str, identity: CurrentIdentity, state: StateDep) -> Response:
    """The items the response continued from (its own input after the previous response's), oldest
    first, in one page."""
    stored = await state.responses.get(identity.account_id, response_id)
    if stored is None:
        raise _not_found(response_id)
    data = [{"id": item.get("id") or f"item_{response_id}_{i}", **item} for i, item in enumerate(stored.input_items)]
    first_id, last_id = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return JSONBody({"object": "list", "data": data, "first_id": first_id, "last_id": last_id, "has_more": False})


@router.delete("/responses/{response_id}")
async def delete_response(request: Request, response_id: str, identity: CurrentIdentity, state: StateDep) -> Response:
    if not await state.responses.delete(identity.account_id, response_id):
        raise _not_found(response_id)
    return JSONBody({"id": response_id, "object": "response", "deleted": True})


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found", param="response_id")
