"""OpenAI chat completions <-> chat jobs. Pure: no I/O."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.messages import ChatTurn
from lexora_contracts.money import pico_to_usd
from lexora_gateway.chat import image_inputs
from lexora_gateway.chat.image_inputs import PendingImage
from lexora_gateway.chat.jobs import ChatJob
from lexora_gateway.chat.reasoning import ReasoningSetting
from lexora_gateway.chat.tools import ToolCall, ToolSpec, ToolUse, calls_text
from lexora_gateway.openai.schemas import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    ImagePart,
    NamedToolChoice,
    ReasoningConfig,
    TextPart,
)

ENDPOINT = "/v1/chat/completions"
COMPLETIONS_ENDPOINT = "/v1/completions"
_DATA_URI = re.compile(r"^data:([^,;]*)((?:;[^,;]*)*),", re.IGNORECASE)


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
        reasoning=reasoning_setting(body),
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
    if _has_images(message):
        return _image_turn(message, index, images)
    if message.role == "assistant" and message.tool_calls:
        calls: list[tuple[str, dict[str, Any]]] = []
        for call_index, call in enumerate(message.tool_calls):
            try:
                arguments = json.loads(call.function.arguments or "{}")
            except ValueError:
                raise InvalidRequest(
                    "Tool call arguments must be a JSON object",
                    param=f"messages[{index}].tool_calls[{call_index}].function.arguments",
                ) from None
            calls.append((call.function.name, arguments))
        return ChatTurn(role="assistant", content="\n".join([message.text(), calls_text(calls)]).strip())
    return ChatTurn(role="system" if message.role == "developer" else message.role, content=message.text())


def _has_images(message: ChatMessage) -> bool:
    return isinstance(message.content, list) and any(isinstance(part, ImagePart) for part in message.content)


def _image_turn(message: ChatMessage, index: int, images: list[PendingImage]) -> ChatTurn:
    """A user message with image_url parts: its text (parts joined as ChatMessage.text does) and its images."""
    assert isinstance(message.content, list)
    text, found = "", []
    for part_index, part in enumerate(message.content):
        where = f"messages[{index}].content[{part_index}]"
        if isinstance(part, TextPart):
            text += part.text
            continue
        if message.role != "user":
            raise InvalidRequest(
                f"Image content is accepted in user messages only, not in a {message.role} message", param=where
            )
        found.append(_image_reference(part.image_url.url, part.image_url.detail, f"{where}.image_url", len(text)))
    return image_inputs.bind(found, ChatTurn(role="user", content=text), images)


def _image_reference(url: str, detail: str, where: str, offset: int) -> PendingImage:
    image = PendingImage(param=f"{where}.url", offset=offset, detail=detail, detail_param=f"{where}.detail")
    match = _DATA_URI.match(url[:256])
    if match is None:
        image.url = url  # check() refuses anything but https, saying what is accepted
        return image
    parameters = [p.strip().lower() for p in match.group(2).split(";") if p.strip()]
    if "base64" not in parameters:
        image.problem = "An image data URI must be base64-encoded: data:image/png;base64,<data>"
        return image
    image.declared_type = match.group(1).strip().lower() or None
    image.data = url[match.end() :]
    return image


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
    parallel = body.parallel_tool_calls is not False
    if isinstance(choice, NamedToolChoice):
        return ToolUse(tools, "auto", choice.function.name, parallel)
    return ToolUse(tools, choice or ("auto" if tools else "none"), parallel=parallel)


def reasoning_setting(body: ChatCompletionRequest) -> ReasoningSetting | None:
    """`reasoning` {effort, max_tokens, enabled, exclude} and the `reasoning_effort` shorthand."""
    config, shorthand = body.reasoning, body.reasoning_effort
    if config is None and shorthand is None:
        return None
    config = config or ReasoningConfig()
    if shorthand is not None and config.effort is not None and shorthand != config.effort:
        raise InvalidRequest(
            f"reasoning_effort '{shorthand}' and reasoning.effort '{config.effort}' disagree; send one of them",
            param="reasoning_effort",
        )
    effort = config.effort or shorthand
    budget = config.max_tokens  # a budget not below max_tokens is capped below it, not refused
    if config.enabled is False or budget == 0:
        if config.enabled is True or effort is not None or budget:
            switch = "reasoning.enabled is false" if config.enabled is False else "reasoning.max_tokens is 0"
            raise InvalidRequest(
                f"{switch}, which turns reasoning off, but the request also asks for reasoning",
                param="reasoning.enabled" if config.enabled is False else "reasoning.max_tokens",
            )
        return ReasoningSetting(enabled=False, budget_tokens=0, exclude=config.exclude)
    if budget is not None:
        effort = None  # an explicit budget wins over an effort
    return ReasoningSetting(enabled=True, budget_tokens=budget, effort=effort, exclude=config.exclude)


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
    calls: list[ToolCall] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        tool_calls = [tool_call_body(call, index) for index, call in enumerate(calls)]
        message = {"role": "assistant", "content": None, "tool_calls": tool_calls}
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
