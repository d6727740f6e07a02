"""Anthropic Messages answers, streamed or whole, from the pieces of chat/answer.py: a reasoning
model's `thinking` block (with the `signature` the SDK expects) first, then the answer's text block
or its tool_use blocks, one per call. Streamed, blocks open and close in order: `thinking_delta`s
closed by a `signature_delta`, `text_delta`s, and a tool_use block opened as soon as the call's
name is known, its input following as `input_json_delta` pieces while the model writes it.

With `thinking.display: "omitted"` the thinking block is still there, as Anthropic sends it, but
its `thinking` text is empty and, streamed, it has no `thinking_delta`s: only the signature."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import Response, StreamingResponse

from lexora_contracts.errors import LexoraError
from lexora_contracts.messages import GenerationChunk
from lexora_gateway.anthropic import translation
from lexora_gateway.chat.answer import AnswerReader, Piece, ReasoningPiece
from lexora_gateway.chat.jobs import ChatJob
from lexora_gateway.chat.reasoning import splits_output
from lexora_gateway.chat.tool_stream import CallArguments, CallClosed, CallOpened, TextPiece
from lexora_gateway.dispatch import answer_pieces, whole_answer
from lexora_gateway.errors import anthropic_sse_error_event
from lexora_gateway.http import JSONBody
from lexora_router.client import GenerationStream

TOOL_ID_PREFIX = "toolu_"


async def respond(
    stream: GenerationStream, first: GenerationChunk, job: ChatJob, requested_model: str, headers: dict[str, str]
) -> Response:
    reader = AnswerReader(job.tools, splits_output(stream.request), TOOL_ID_PREFIX)
    if job.stream:
        events = _events(stream, first, reader, requested_model, _omitted(job))
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    answer = await whole_answer(stream, first, reader)
    done, message_id = answer.done, stream.request.request_id
    usage = translation.usage_block(done.prompt_tokens, done.completion_tokens, done.cost_pico)
    body = translation.message_body(
        message_id, requested_model, answer.text, done.finish_reason, done.stop_sequence, usage, answer.calls
    )
    if answer.reasoning:
        body["content"] = [thinking_block(message_id, answer.reasoning, _omitted(job)), *body["content"]]
    return JSONBody(body, headers=headers)


def _omitted(job: ChatJob) -> bool:
    return bool(job.reasoning and job.reasoning.exclude)


class _Blocks:
    """The content blocks of a streamed message, opened and closed in order."""

    def __init__(self, message_id: str, omit_thinking: bool = False):
        self.message_id = message_id
        self.omit_thinking = omit_thinking
        self.count = 0  # blocks opened so far; the open one is count - 1
        self.open: str | None = None
        self.answered = False  # a text or tool_use block was opened
        self.thinking: list[str] = []

    def start(self, block: dict[str, Any]) -> bytes:
        out = self.stop()
        self.open = block["type"]
        self.count += 1
        out += translation.event("content_block_start", {"index": self.count - 1, "content_block": block})
        # Anthropic's order: message_start, the first content_block_start, then a ping.
        return out + translation.ping() if self.count == 1 else out

    def delta(self, delta: dict[str, Any]) -> bytes:
        return translation.event("content_block_delta", {"index": self.count - 1, "delta": delta})

    def stop(self) -> bytes:
        if self.open is None:
            return b""
        out = b""
        if self.open == "thinking":
            signature = thinking_signature(self.message_id, "".join(self.thinking))
            out = self.delta({"type": "signature_delta", "signature": signature})
        self.open = None
        return out + translation.event("content_block_stop", {"index": self.count - 1})

    def piece(self, piece: Piece) -> bytes:
        if isinstance(piece, ReasoningPiece):
            return self.thought(piece.text)
        if isinstance(piece, TextPiece):
            return self.text(piece.text)
        if isinstance(piece, CallOpened):
            self.answered = True
            block = {"type": "tool_use", "id": piece.call_id, "name": piece.name, "input": {}}
            return self.start(block)
        if isinstance(piece, CallArguments):
            return self.delta({"type": "input_json_delta", "partial_json": piece.text})
        assert isinstance(piece, CallClosed)
        return self.stop()

    def thought(self, text: str) -> bytes:
        if not text:
            return b""
        self.thinking.append(text)
        out = b"" if self.open == "thinking" else self.start({"type": "thinking", "thinking": "", "signature": ""})
        if self.omit_thinking:
            return out
        return out + self.delta({"type": "thinking_delta", "thinking": text})

    def text(self, text: str) -> bytes:
        if not text:
            return b""
        return self._text_block() + self.delta({"type": "text_delta", "text": text})

    def _text_block(self) -> bytes:
        if self.open == "text":
            return b""
        self.answered = True
        return self.start({"type": "text", "text": ""})

    def end(self) -> bytes:
        """Close the last block; a message always has a text (maybe empty) or tool_use block."""
        return (b"" if self.answered else self._text_block()) + self.stop()


async def _events(
    stream: GenerationStream, first: GenerationChunk, reader: AnswerReader, requested_model: str, omit: bool
) -> AsyncIterator[bytes]:
    blocks = _Blocks(stream.request.request_id, omit)
    try:
        yield translation.message_start(stream.request.request_id, requested_model, first.prompt_tokens)
        async for pieces in answer_pieces(stream, first, reader):
            out = b"".join(blocks.piece(piece) for piece in pieces)
            if out:
                yield out
        answer = reader.answer
        assert answer is not None
        done = answer.done
        usage = translation.usage_block(done.prompt_tokens, done.completion_tokens, done.cost_pico)
        yield (
            blocks.end()
            + translation.message_delta(done.finish_reason, done.stop_sequence, usage, bool(answer.calls))
            + translation.message_stop()
        )
    except LexoraError as exc:
        yield anthropic_sse_error_event(exc)
    finally:
        await stream.release()


def thinking_signature(message_id: str, thinking: str) -> str:
    """The `signature` Anthropic's SDK expects on a thinking block. Thinking blocks sent back are
    not fed to the model (see anthropic.translation), so this is an opaque digest, not a secret."""
    digest = hashlib.sha256(f"{message_id}\n{thinking}".encode()).digest()
    return base64.b64encode(digest).decode()


def thinking_block(message_id: str, thinking: str, omitted: bool = False) -> dict[str, Any]:
    """`omitted` (thinking.display): the block stays, with empty text; the signature is the same."""
    signature = thinking_signature(message_id, thinking)
    return {"type": "thinking", "thinking": "" if omitted else thinking, "signature": signature}
