"""OpenAI chat completions <-> chat jobs. Pure: no I/O."""

from __future__ import annotations

import json
import uuid
from typing import Any

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.messages import ChatTurn
from lexora_contracts.money import pico_to_usd
from lexora_gateway.chat import image_inputs, reasoning
from lexora_gateway.chat.image_inputs import PendingImage
from lexora_gateway.chat.jobs import ChatJob
from lexora_gateway.chat.tools import ToolCall, ToolSpec, ToolUse, call_text
from lexora_gateway.openai.schemas import ChatCompletionRequest, ChatMessage, CompletionRequest, NamedToolChoice

ENDPOINT = "/v1/chat/completions"
COMPLETIONS_ENDPOINT = "/v1/completions"


def new_request_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def to_job(body: ChatCompletionRequest) -> ChatJob:
    tool_use = _tool_use(body)
    tool_use.check("tool_choice")
    images: list[PendingImage] = []
    return ChatJob(
        model=body.model,
        messages=[_turn(m, i, images) for i, m in enumerate(body.messages)],
        images=images,
        tools=tool_use,
        output_guide=_output_guide(body),
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
        max_tokens=body.requested_max_tokens(),
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_list(),
        stream=body.stream,
        endpoint=ENDPOINT,
        reasoning=reasoning.from_openai(body),
    )


def completion_to_job(body: CompletionRequest) -> ChatJob:
    try:
        prompt = body.single_prompt()
    except ValueError:
        raise InvalidRequest("Send one prompt per request (a string, or a list of one)", param="prompt") from None
    return ChatJob(
        model=body.model,
        messages=[],
        raw_prompt=prompt,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_list(),
        stream=body.stream,
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
        endpoint=COMPLETIONS_ENDPOINT,
    )


def text_completion_body(
    request_id: str, model: str, created: int, text: str, finish_reason: str | None, usage: dict[str, Any] | None
) -> dict[str, Any]:
    """A legacy completion, or (with usage None and object "text_completion") one streamed chunk."""
    body: dict[str, Any] = {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def _turn(message: ChatMessage, index: int, images: list[PendingImage]) -> ChatTurn:
    if image_inputs.has_images(message):
        return image_inputs.openai_turn(message, index, images)
    if message.role == "assistant" and message.tool_calls:
        calls = []
        for call_index, call in enumerate(message.tool_calls):
            try:
                arguments = json.loads(call.function.arguments or "{}")
            except ValueError:
                raise InvalidRequest(
                    "Tool call arguments must be a JSON object",
                    param=f"messages[{index}].tool_calls[{call_index}].function.arguments",
                ) from None
            calls.append(call_text(call.function.name, arguments))
        return ChatTurn(role="assistant", content="\n".join([message.text(), *calls]).strip())
    return ChatTurn(role="system" if message.role == "developer" else message.role, content=message.text())


def _output_guide(body: ChatCompletionRequest) -> tuple[str, str] | None:
    response_format = body.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return "json", ""
    if response_format.json_schema is None:
        raise InvalidRequest(
            "response_format of type json_schema needs a json_schema", param="response_format.json_schema"
        )
    return "json_schema", json.dumps(response_format.json_schema.schema_)


def _tool_use(body: ChatCompletionRequest) -> ToolUse:
    tools = [ToolSpec(t.function.name, t.function.description, t.function.parameters) for t in body.tools or []]
    choice = body.tool_choice
    if isinstance(choice, NamedToolChoice):
        return ToolUse(tools, "auto", choice.function.name)
    return ToolUse(tools, choice or ("auto" if tools else "none"))


def tool_call_body(call: ToolCall, index: int = 0) -> dict[str, Any]:
    return {
        "index": index,
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments_json},
    }


def usage_block(prompt_tokens: int, completion_tokens: int, cost_pico: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cost": pico_to_usd(cost_pico),
    }


def completion_body(
    request_id: str,
    model: str,
    created: int,
    text: str,
    finish_reason: str | None,
    usage: dict[str, Any],
    call: ToolCall | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if call is not None:
        message = {"role": "assistant", "content": None, "tool_calls": [tool_call_body(call)]}
        finish_reason = "tool_calls"
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage,
    }


def chunk_body(
    request_id: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    with_choice: bool = True,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
        if with_choice
        else [],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def openai_finish_reason(engine_reason: str | None) -> str:
    # The engine says "cancelled" only when the client went away; nobody reads that answer.
    return engine_reason if engine_reason in ("stop", "length") else "stop"
