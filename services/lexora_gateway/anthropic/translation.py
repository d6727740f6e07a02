"""Anthropic Messages <-> chat jobs, and Anthropic's SSE events. Pure: no I/O.

Image blocks (in user messages and their tool results) are gathered as pending images
(lexora_gateway.chat.image_inputs): checked, and refused for models without vision, before dispatch.

Server tools (web_search, code_execution, ...) are Anthropic's to run, not ours: they are left out
of what the model sees and named in the IGNORED_TOOLS_HEADER of the response.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import orjson

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.messages import ChatTurn
from lexora_contracts.money import pico_to_usd
from lexora_contracts.registry import ModelRecord
from lexora_gateway.anthropic.schemas import (
    CountTokensRequest,
    ImageBlock,
    Message,
    MessagesRequest,
    ServerTool,
    TextBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
)
from lexora_gateway.chat import image_inputs
from lexora_gateway.chat.image_inputs import PendingImage
from lexora_gateway.chat.jobs import ChatJob
from lexora_gateway.chat.reasoning import ReasoningSetting, reasons
from lexora_gateway.chat.tools import ToolCall, ToolSpec, ToolUse, calls_text, with_instructions

ENDPOINT = "/v1/messages"
IGNORED_TOOLS_HEADER = "x-lexora-ignored-tools"


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def to_turns(
    system: str | list[TextBlock] | None, messages: list[Message], images: list[PendingImage]
) -> list[ChatTurn]:
    """The conversation as chat turns; image blocks are appended to `images`, in order."""
    turns = []
    if system:
        text = system if isinstance(system, str) else "\n\n".join(block.text for block in system)
        turns.append(ChatTurn(role="system", content=text))
    for index, message in enumerate(messages):
        turns.extend(_turns_of(message, index, images))
    return turns


def _turns_of(message: Message, index: int, images: list[PendingImage]) -> list[ChatTurn]:
    """One message as the engine reads it: tool results become turns of their own."""
    if isinstance(message.content, str):
        return [ChatTurn(role=message.role, content=message.content)]
    turns, parts, found = [], [], []
    uses: list[tuple[str, dict[str, Any]]] = []  # tool_use blocks: one JSON text, as the model writes calls
    for block_index, block in enumerate(message.content):
        where = f"messages[{index}].content[{block_index}]"
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            uses.append((block.name, block.input))
        elif isinstance(block, ToolResultBlock):
            turns.append(_tool_result_turn(block, where, message.role, images))
        elif isinstance(block, ImageBlock):
            _user_only(message.role, where)
            found.append(_image(block, where, len("\n".join(parts))))
        # thinking blocks from earlier turns are not fed back to the model
    if uses:
        parts.append(calls_text(uses))
    if parts or found or not turns:
        turns.append(image_inputs.bind(found, ChatTurn(role=message.role, content="\n".join(parts)), images))
    return turns


def _tool_result_turn(block: ToolResultBlock, where: str, role: str, images: list[PendingImage]) -> ChatTurn:
    prefix = "Error: " if block.is_error else ""
    if not isinstance(block.content, list):
        return ChatTurn(role="tool", content=prefix + (block.content or ""))
    text, found = prefix, []
    for part_index, part in enumerate(block.content):
        if isinstance(part, TextBlock):
            text += part.text
        else:
            _user_only(role, f"{where}.content[{part_index}]")
            found.append(_image(part, f"{where}.content[{part_index}]", len(text)))
    return image_inputs.bind(found, ChatTurn(role="tool", content=text), images)


def _image(block: ImageBlock, where: str, offset: int) -> PendingImage:
    source = block.source
    if source.type == "url":
        if not source.url:
            raise InvalidRequest("An image source of type 'url' needs a url", param=f"{where}.source.url")
        return PendingImage(param=f"{where}.source.url", offset=offset, url=source.url)
    if not source.media_type:
        raise InvalidRequest("An image source of type 'base64' needs a media_type", param=f"{where}.source.media_type")
    if not source.data:
        raise InvalidRequest("An image source of type 'base64' needs data", param=f"{where}.source.data")
    return PendingImage(
        param=f"{where}.source.data",
        offset=offset,
        data=source.data,
        declared_type=source.media_type.strip().lower(),
        type_param=f"{where}.source.media_type",
    )


def _user_only(role: str, where: str) -> None:
    if role != "user":
        raise InvalidRequest(f"Image blocks are accepted in user messages only, not in {role} messages", param=where)


def ignored_tools(body: MessagesRequest | CountTokensRequest) -> list[str]:
    """The server tools in the request, by name, in order."""
    return [t.name for t in body.tools or [] if t.hosted]


def ignored_tools_header(body: MessagesRequest | CountTokensRequest) -> dict[str, str]:
    # Percent-encoded: a header value is Latin-1, a tool name need not be.
    names = [quote(name, safe="_-.:/@") for name in ignored_tools(body)]
    return {IGNORED_TOOLS_HEADER: ", ".join(names)} if names else {}


def _client_tool(tool: Tool | ServerTool, index: int) -> ToolSpec:
    if not isinstance(tool, Tool):  # a "custom" tool without its schema
        raise InvalidRequest(
            f"Missing required parameter: 'tools[{index}].input_schema'", param=f"tools[{index}].input_schema"
        )
    return ToolSpec(tool.name, tool.description or "", tool.input_schema)


def tool_use_of(body: MessagesRequest | CountTokensRequest) -> ToolUse:
    """The client tools and what tool_choice demands of them; server tools are left out, and a
    tool_choice that forces one is refused (the model could never satisfy it)."""
    tools = [_client_tool(t, i) for i, t in enumerate(body.tools or []) if not t.hosted]
    hosted = ignored_tools(body)
    choice = body.tool_choice
    if choice is None or choice.type == "auto":
        use = ToolUse(tools, "auto" if tools else "none")
    elif choice.type == "any":
        if not tools and hosted:
            raise InvalidRequest(
                f"tool_choice 'any' requires a tool call, but the only tools are server tools this gateway "
                f"does not run: {', '.join(hosted)}",
                param="tool_choice",
            )
        use = ToolUse(tools, "required")
    elif choice.type == "tool":
        if not choice.name:
            raise InvalidRequest("tool_choice of type 'tool' needs a name", param="tool_choice.name")
        if choice.name in hosted:
            raise InvalidRequest(
                f"tool_choice names '{choice.name}', a server tool this gateway does not run; "
                "only client tools (with an input_schema) can be called",
                param="tool_choice.name",
            )
        use = ToolUse(tools, "auto", choice.name)
    else:
        use = ToolUse(tools, "none")
    use.parallel = not (choice is not None and choice.disable_parallel_tool_use)
    use.check("tool_choice")
    return use


def to_job(body: MessagesRequest) -> ChatJob:
    images: list[PendingImage] = []
    return ChatJob(
        model=body.model,
        messages=to_turns(body.system, body.messages, images),
        images=images,
        tools=tool_use_of(body),
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k or None,
        stop=body.stop_sequences,
        stream=body.stream,
        endpoint=ENDPOINT,
        reasoning=reasoning_setting(body),
    )


def reasoning_setting(body: MessagesRequest) -> ReasoningSetting | None:
    """`thinking` {type: enabled|disabled|adaptive, budget_tokens, display} and
    `output_config.effort`. `enabled` thinks within budget_tokens; `adaptive` lets the model decide,
    which for us is reasoning on at the model's default budget. Without budget_tokens, an effort
    sets the budget as a share of max_tokens (EFFORT_SHARE). Without `thinking`, effort changes
    nothing: the model's default stands, as Anthropic's does not think unless asked."""
    thinking = body.thinking
    if thinking is None:
        return None
    if thinking.type == "disabled":
        return ReasoningSetting(enabled=False, budget_tokens=0)
    budget = thinking.budget_tokens if thinking.type == "enabled" else None
    if budget is not None and budget >= body.max_tokens:
        raise InvalidRequest(
            f"thinking.budget_tokens ({budget}) must be less than max_tokens ({body.max_tokens})",
            param="thinking.budget_tokens",
        )
    effort = body.output_config.effort if body.output_config and budget is None else None
    return ReasoningSetting(enabled=True, budget_tokens=budget, effort=effort, exclude=thinking.display == "omitted")


def count_turns(body: CountTokensRequest, images: list[PendingImage]) -> list[ChatTurn]:
    """What the model would read, tool descriptions included, so the count matches the bill; the
    images are gathered into `images` (to be checked and put on their turns before counting)."""
    return with_instructions(to_turns(body.system, body.messages, images), tool_use_of(body))


def count_budget(body: CountTokensRequest, model: ModelRecord) -> int | None:
    """The reasoning budget to count a prompt with: what the same `thinking` would send in a
    messages request (its bounds are that request's business), so the count matches the bill. A
    count has no max_tokens to take an effort's share of; what shapes the prompt is whether the
    model thinks (budget > 0) or not, so an effort counts with the least budget that says so."""
    thinking = body.thinking
    if thinking is None or not reasons(model):
        return None  # the model's default; a model that does not reason ignores the setting
    if thinking.type == "disabled":
        return 0
    if thinking.type == "enabled" and thinking.budget_tokens is not None:
        return thinking.budget_tokens
    return 1 if body.output_config and body.output_config.effort else None


def stop_reason(engine_reason: str | None, stop_sequence: str | None, called: bool = False) -> str:
    """Why the message ended; max_tokens even in a tool_use block (the call was cut short)."""
    if engine_reason == "length":
        return "max_tokens"
    if called:
        return "tool_use"
    return "stop_sequence" if stop_sequence else "end_turn"


def usage_block(input_tokens: int, output_tokens: int, cost_pico: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cost": pico_to_usd(cost_pico),
    }


def tool_use_block(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}


def message_body(
    message_id: str,
    requested_model: str,
    text: str,
    engine_reason: str | None,
    stop_sequence: str | None,
    usage: dict[str, Any],
    calls: list[ToolCall] | None = None,
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": [tool_use_block(c) for c in calls] if calls else [{"type": "text", "text": text}],
        "stop_reason": stop_reason(engine_reason, stop_sequence, bool(calls)),
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


def message_delta(
    engine_reason: str | None, stop_sequence: str | None, usage: dict[str, Any], called: bool = False
) -> bytes:
    return event(
        "message_delta",
        {
            "delta": {"stop_reason": stop_reason(engine_reason, stop_sequence, called), "stop_sequence": stop_sequence},
            "usage": usage,
        },
    )


def ping() -> bytes:
    return event("ping", {})


def message_stop() -> bytes:
    return event("message_stop", {})
