"""Anthropic Messages <-> chat jobs, and Anthropic's SSE events. Pure: no I/O.

What the engine does not support yet (tool calls, image input) is refused here with a clear
invalid_request_error naming the field, rather than silently dropped.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from lexora_contracts.anthropic import (
    CountTokensRequest,
    ImageBlock,
    Message,
    MessagesRequest,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from lexora_contracts.errors import InvalidRequest
from lexora_contracts.messages import ChatTurn
from lexora_contracts.money import pico_to_usd
from lexora_gateway.jobs import ChatJob

ENDPOINT = "/v1/messages"


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def to_turns(system: str | list[TextBlock] | None, messages: list[Message]) -> list[ChatTurn]:
    turns = []
    if system:
        text = system if isinstance(system, str) else "\n\n".join(block.text for block in system)
        turns.append(ChatTurn(role="system", content=text))
    for index, message in enumerate(messages):
        turns.append(ChatTurn(role=message.role, content=_text_of(message, index)))
    return turns


def _text_of(message: Message, index: int) -> str:
    if isinstance(message.content, str):
        return message.content
    parts = []
    for block_index, block in enumerate(message.content):
        where = f"messages[{index}].content[{block_index}]"
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif isinstance(block, ThinkingBlock):
            continue  # earlier thinking is not fed back to the model
        elif isinstance(block, ImageBlock):
            raise InvalidRequest("Image input is not supported by this model", param=where)
        elif isinstance(block, ToolUseBlock | ToolResultBlock):
            raise InvalidRequest("Tool use is not supported by this model yet", param=where)
    return "".join(parts)


def to_job(body: MessagesRequest) -> ChatJob:
    if body.tools and (body.tool_choice is None or body.tool_choice.type != "none"):
        raise InvalidRequest("Tool use is not supported by this model yet", param="tools")
    return ChatJob(
        model=body.model,
        messages=to_turns(body.system, body.messages),
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k or None,
        stop=body.stop_sequences,
        stream=body.stream,
        endpoint=ENDPOINT,
    )


def count_turns(body: CountTokensRequest) -> list[ChatTurn]:
    return to_turns(body.system, body.messages)


def stop_reason(engine_reason: str | None, stop_sequence: str | None) -> str:
    if engine_reason == "length":
        return "max_tokens"
    return "stop_sequence" if stop_sequence else "end_turn"


def usage_block(input_tokens: int, output_tokens: int, cost_pico: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cost": pico_to_usd(cost_pico),
    }


def message_body(
    message_id: str,
    requested_model: str,
    text: str,
    engine_reason: str | None,
    stop_sequence: str | None,
    usage: dict[str, Any],
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason(engine_reason, stop_sequence),
        "stop_sequence": stop_sequence,
        "usage": usage,
    }


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"


def message_start(message_id: str, requested_model: str, input_tokens: int) -> bytes:
    return event(
        "message_start",
        {
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": requested_model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 0},
            }
        },
    )


def text_block_start() -> bytes:
    return event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})


def text_delta(text: str) -> bytes:
    return event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}})


def block_stop() -> bytes:
    return event("content_block_stop", {"index": 0})


def message_delta(engine_reason: str | None, stop_sequence: str | None, usage: dict[str, Any]) -> bytes:
    return event(
        "message_delta",
        {
            "delta": {"stop_reason": stop_reason(engine_reason, stop_sequence), "stop_sequence": stop_sequence},
            "usage": usage,
        },
    )


def ping() -> bytes:
    return event("ping", {})


def message_stop() -> bytes:
    return event("message_stop", {})
