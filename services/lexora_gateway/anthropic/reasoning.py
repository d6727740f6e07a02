"""Anthropic Messages answers from a reasoning model: a `thinking` block (with the `signature` the
SDK expects) before the text or tool_use block; streamed as `thinking_delta`s closed by a
`signature_delta`, then the answer's block at the next index.

With `thinking.display: "omitted"` the block is still there, as Anthropic sends it, but its
`thinking` text is empty and, streamed, it has no `thinking_delta`s: only the signature."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import Response, StreamingResponse

from lexora_contracts.errors import LexoraError
from lexora_contracts.messages import GenerationChunk
from lexora_gateway.anthropic import translation
from lexora_gateway.chat.jobs import ChatJob
from lexora_gateway.chat.reasoning import ReasoningTracker
from lexora_gateway.chat.tools import ToolCall, parse_call
from lexora_gateway.dispatch import collect
from lexora_gateway.errors import anthropic_sse_error_event
from lexora_gateway.http import JSONBody
from lexora_router.client import GenerationStream


async def respond(
    stream: GenerationStream,
    first: GenerationChunk,
    job: ChatJob,
    requested_model: str,
    headers: dict[str, str],
    tool_id_prefix: str,
) -> Response:
    message_id = stream.request.request_id
    if job.stream:
        events = _events(stream, first, job, requested_model, tool_id_prefix)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    try:
        text, done = await collect(stream, first)
    finally:
        await stream.release()
    thinking, answer = ReasoningTracker().split(text, done.completion_tokens)
    usage = translation.usage_block(done.prompt_tokens, done.completion_tokens, done.cost_pico)
    call = parse_call(answer, job.tools, tool_id_prefix)
    body = translation.message_body(
        message_id, requested_model, answer, done.finish_reason, done.stop_sequence, usage, call
    )
    if thinking:
        body["content"] = [thinking_block(message_id, thinking, _omitted(job)), *body["content"]]
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
        return out + translation.event("content_block_start", {"index": self.count - 1, "content_block": block})

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

    def tool_use(self, call: ToolCall) -> bytes:
        self.answered = True
        out = self.start({**translation.tool_use_block(call), "input": {}})
        return out + self.delta({"type": "input_json_delta", "partial_json": call.arguments_json}) + self.stop()


async def _events(
    stream: GenerationStream, first: GenerationChunk, job: ChatJob, requested_model: str, tool_id_prefix: str
) -> AsyncIterator[bytes]:
    """Thinking streams as it comes. The answer does too, unless tools are offered: then it is read
    whole, since only then is it known whether it is a tool_use block or text."""
    blocks = _Blocks(stream.request.request_id, _omitted(job))
    tracker = ReasoningTracker()
    hold_answer = job.tools.active
    held: list[str] = []

    def emit(thinking: str, answer: str) -> bytes:
        out = blocks.thought(thinking)
        if hold_answer:
            held.append(answer)
            return out
        return out + blocks.text(answer)

    try:
        yield (
            translation.message_start(stream.request.request_id, requested_model, first.prompt_tokens)
            + translation.ping()
        )
        chunk = first
        while True:
            if chunk.kind == "delta" and chunk.text:
                out = emit(*tracker.feed(chunk.text, chunk.completion_tokens))
                if out:
                    yield out
            if chunk.kind == "done":
                break
            chunk = await stream.next()
        out = emit(*tracker.finish(chunk.completion_tokens))
        call = parse_call("".join(held), job.tools, tool_id_prefix) if hold_answer else None
        if call is not None:
            out += blocks.tool_use(call)
        elif hold_answer:
            out += blocks.text("".join(held))
        out += blocks.end()
        usage = translation.usage_block(chunk.prompt_tokens, chunk.completion_tokens, chunk.cost_pico)
        yield (
            out
            + translation.message_delta(chunk.finish_reason, chunk.stop_sequence, usage, call)
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
