"""OpenAI chat completion answers, streamed or whole, from the pieces of chat/answer.py: prose in
`content`; tool calls in `tool_calls`, streamed as they are generated (the call's id and name,
then `function.arguments` pieces), several when the model makes parallel calls; a reasoning
model's reasoning in `message.reasoning` (OpenRouter) and `message.reasoning_content` (DeepSeek),
streamed as `delta.reasoning`, left out when the request says `reasoning.exclude`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi.responses import Response, StreamingResponse

from lexora_contracts.errors import LexoraError
from lexora_contracts.messages import GenerationChunk
from lexora_gateway.chat.answer import Answer, AnswerReader, Piece, ReasoningPiece
from lexora_gateway.chat.jobs import ChatJob
from lexora_gateway.chat.reasoning import splits_output
from lexora_gateway.chat.tool_stream import CallArguments, CallOpened, TextPiece
from lexora_gateway.dispatch import answer_pieces, whole_answer
from lexora_gateway.errors import sse_error_event
from lexora_gateway.http import JSONBody
from lexora_gateway.openai import translation
from lexora_router.client import GenerationStream

CALL_ID_PREFIX = "call_"


def _excluded(job: ChatJob) -> bool:
    return bool(job.reasoning and job.reasoning.exclude)


async def respond(
    stream: GenerationStream, first: GenerationChunk, job: ChatJob, include_usage: bool, headers: dict[str, str]
) -> Response:
    reader = AnswerReader(job.tools, splits_output(stream.request), CALL_ID_PREFIX)
    if job.stream:
        events = _sse(stream, first, job, reader, include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    answer = await whole_answer(stream, first, reader)
    request = stream.request
    body = translation.completion_body(
        request.request_id,
        request.model,
        int(request.received_at),
        answer.text,
        _finish_reason(answer),
        _usage(answer),
        answer.calls,
    )
    body["choices"][0]["message"].update(reasoning_fields(answer.reasoning, _excluded(job)))
    return JSONBody(body, headers=headers)


def _finish_reason(answer: Answer) -> str:
    """ "tool_calls" when the model called, unless max_tokens cut it short ("length", as OpenAI says)."""
    finish = translation.openai_finish_reason(answer.done.finish_reason)
    return "tool_calls" if answer.calls and finish != "length" else finish


def _usage(answer: Answer) -> dict[str, Any]:
    done = answer.done
    usage = translation.usage_block(done.prompt_tokens, done.completion_tokens, done.cost_pico)
    return with_reasoning_tokens(usage, answer.reasoning_tokens) if answer.reasons else usage


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _delta(piece: Piece, exclude: bool) -> dict[str, Any] | None:
    """The `delta` that streams one piece (None: nothing to send)."""
    if isinstance(piece, ReasoningPiece):
        return reasoning_fields(piece.text, exclude) or None
    if isinstance(piece, TextPiece):
        return {"content": piece.text}
    if isinstance(piece, CallOpened):
        opened = {"index": piece.index, "id": piece.call_id, "type": "function"}
        return {"tool_calls": [{**opened, "function": {"name": piece.name, "arguments": ""}}]}
    if isinstance(piece, CallArguments):
        return {"tool_calls": [{"index": piece.index, "function": {"arguments": piece.text}}]}
    return None  # CallClosed: the arguments went out already


async def _sse(
    stream: GenerationStream, first: GenerationChunk, job: ChatJob, reader: AnswerReader, include_usage: bool
) -> AsyncIterator[bytes]:
    request = stream.request
    request_id, model_id, created = request.request_id, request.model, int(request.received_at)
    exclude = _excluded(job)
    try:
        yield _event(translation.chunk_body(request_id, model_id, created, {"role": "assistant", "content": ""}))
        async for pieces in answer_pieces(stream, first, reader):
            deltas = (_delta(piece, exclude) for piece in pieces)
            out = b"".join(
                _event(translation.chunk_body(request_id, model_id, created, d)) for d in deltas if d is not None
            )
            if out:
                yield out
        answer = reader.answer
        assert answer is not None
        yield _ending(request_id, model_id, created, _finish_reason(answer), _usage(answer), include_usage)
    except LexoraError as exc:
        yield sse_error_event(exc)
    finally:
        # A client that disconnected lands here too (the generator is closed): stop the engine.
        await stream.release()


def _ending(
    request_id: str, model_id: str, created: int, finish: str, usage: dict[str, Any], include_usage: bool
) -> bytes:
    """The finish chunk with usage (or, with include_usage, a separate usage chunk), then [DONE]."""
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
