"""OpenAI Responses API <-> chat jobs: input items to chat turns, the response body and its output
items. Pure: no I/O (the stored conversation is read by the route, lexora_gateway.openai.responses).

A conversation is the instructions (a system turn, never carried over by previous_response_id, as
OpenAI's are not), the stored items of the previous response (its input and output), then the new
input. Assistant text and the calls it made become one assistant turn; a call's output is a tool
turn. Reasoning items are dropped: a model's earlier reasoning is not fed back, encrypted or not.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.messages import ChatTurn
from lexora_contracts.money import pico_to_usd
from lexora_gateway.chat import image_inputs
from lexora_gateway.chat.image_inputs import PendingImage
from lexora_gateway.chat.jobs import ChatJob
from lexora_gateway.chat.reasoning import ReasoningSetting
from lexora_gateway.chat.tools import ToolSpec, ToolUse, calls_text
from lexora_gateway.openai.responses_schemas import (
    Content,
    CustomToolCallItem,
    CustomToolCallOutputItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionChoice,
    FunctionTool,
    HostedChoice,
    InputImage,
    InputItem,
    MessageItem,
    Refusal,
    ResponsesRequest,
)
from lexora_gateway.openai.translation import _image_reference

ENDPOINT = "/v1/responses"
IGNORED_TOOLS_HEADER = "x-lexora-ignored-tools"  # as on the Anthropic routes
DEFAULT_TEMPERATURE = 0.7  # the platform's chat default
CALL_ID_PREFIX = "call_"
_ITEMS = TypeAdapter(list[InputItem])


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# ---- request -> chat job ----------------------------------------------------------------------
def input_items(body: ResponsesRequest) -> list[InputItem]:
    """The request's input as items: a string is one user message."""
    if isinstance(body.input, str):
        return [MessageItem(role="user", content=body.input)] if body.input else []
    return list(body.input)


def items_from_store(stored: Sequence[dict[str, Any]]) -> list[InputItem]:
    """Items kept with a stored response (its input, then its output), parsed as input again."""
    return _ITEMS.validate_python(list(stored))


def dump_items(items: Sequence[InputItem]) -> list[dict[str, Any]]:
    return [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in items]


def to_job(body: ResponsesRequest, history: Sequence[InputItem] = ()) -> ChatJob:
    """The chat job for `body`, continuing `history` (the previous response's items)."""
    if body.background:
        raise InvalidRequest("Background responses are not supported; leave background false", param="background")
    current = input_items(body)
    if not current and not history:
        raise InvalidRequest("Missing required parameter: 'input'", param="input")
    images: list[PendingImage] = []
    turns = [ChatTurn(role="system", content=body.instructions)] if body.instructions else []
    turns += to_turns(history, images, lambda _: "previous_response_id")
    turns += to_turns(current, images, lambda index: f"input[{index}]")
    tools = tool_use_of(body)
    return ChatJob(
        model=body.model,
        messages=turns,
        images=images,
        tools=tools,
        output_guide=output_guide(body),
        max_tokens=body.max_output_tokens,
        temperature=DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        stream=body.stream,
        endpoint=ENDPOINT,
        reasoning=reasoning_setting(body),
    )


def to_turns(items: Sequence[InputItem], images: list[PendingImage], where: Callable[[int], str]) -> list[ChatTurn]:
    """Items as the engine reads them; image parts are appended to `images`, in order."""
    turns: list[ChatTurn] = []
    assistant: list[str] = []  # assistant text and calls in a row: one turn
    calls: list[tuple[str, dict[str, Any]]] = []  # written after the text, as the model writes them

    def flush() -> None:
        if assistant or calls:
            written = [*assistant, calls_text(calls)] if calls else assistant
            turns.append(ChatTurn(role="assistant", content="\n".join(written)))
            assistant.clear()
            calls.clear()

    for index, item in enumerate(items):
        if isinstance(item, MessageItem) and item.role == "assistant":
            assistant.append(_text_of(item.content, where(index), images=None))
        elif isinstance(item, MessageItem):
            flush()
            role = "system" if item.role == "developer" else item.role
            found: list[PendingImage] = []
            text = _text_of(item.content, where(index), found if item.role == "user" else None)
            turns.append(image_inputs.bind(found, ChatTurn(role=role, content=text), images))
        elif isinstance(item, FunctionCallItem):
            calls.append((item.name, _arguments(item.arguments, f"{where(index)}.arguments")))
        elif isinstance(item, CustomToolCallItem):
            calls.append((item.name, {"input": item.input}))
        elif isinstance(item, FunctionCallOutputItem | CustomToolCallOutputItem):
            flush()
            turns.append(ChatTurn(role="tool", content=_text_of(item.output, f"{where(index)}.output", None)))
        # reasoning items and hosted tools' call records are not fed to the model
    flush()
    return turns


def _text_of(content: str | list[Content], where: str, images: list[PendingImage] | None) -> str:
    """A content's text; its images are appended to `images` (None: images are refused here)."""
    if isinstance(content, str):
        return content
    text = ""
    for index, part in enumerate(content):
        at = f"{where}.content[{index}]" if not where.endswith(".output") else f"{where}[{index}]"
        if isinstance(part, Refusal):
            text += part.refusal
        elif isinstance(part, InputImage):
            if images is None:
                raise InvalidRequest("Image content is accepted in user messages only", param=at)
            images.append(_image(part, at, len(text)))
        else:
            text += part.text
    return text


def _image(part: InputImage, where: str, offset: int) -> PendingImage:
    if not part.image_url:
        raise InvalidRequest(
            "An input_image needs an image_url (a base64 data URI or an https URL); file_id is not supported",
            param=f"{where}.image_url",
        )
    image = _image_reference(part.image_url, part.detail, where, offset)
    image.param, image.detail_param = f"{where}.image_url", f"{where}.detail"
    return image


def _arguments(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise InvalidRequest("A function call's arguments must be a JSON object", param=where)
    return value


def ignored_tools(body: ResponsesRequest) -> list[str]:
    """The hosted tools in the request (web_search, file_search, ...), by name, in order."""
    return [t.label for t in body.tools or [] if not isinstance(t, FunctionTool)]


def ignored_tools_header(body: ResponsesRequest) -> dict[str, str]:
    names = [quote(name, safe="_-.:/@") for name in ignored_tools(body)]  # a header value is Latin-1
    return {IGNORED_TOOLS_HEADER: ", ".join(names)} if names else {}


def tool_use_of(body: ResponsesRequest) -> ToolUse:
    """The function tools and what tool_choice demands of them; hosted tools are left out, and a
    tool_choice that forces one is refused (the model could never satisfy it)."""
    tools = [
        ToolSpec(t.name, t.description or "", t.parameters or {"type": "object", "properties": {}})
        for t in body.tools or []
        if isinstance(t, FunctionTool)
    ]
    hosted = ignored_tools(body)
    choice = body.tool_choice
    if isinstance(choice, HostedChoice):
        raise InvalidRequest(
            f"tool_choice forces '{choice.name or choice.type}', a hosted tool this gateway does not run; "
            "only function tools can be called",
            param="tool_choice",
        )
    if isinstance(choice, FunctionChoice):
        use = ToolUse(tools, "auto", choice.name)
    elif choice == "required":
        if not tools and hosted:
            raise InvalidRequest(
                "tool_choice 'required' needs a tool call, but the only tools are hosted tools this gateway "
                f"does not run: {', '.join(hosted)}",
                param="tool_choice",
            )
        use = ToolUse(tools, "required")
    elif choice == "none":
        use = ToolUse(tools, "none")
    else:
        use = ToolUse(tools, "auto" if tools else "none")
    use.parallel = body.parallel_tool_calls is not False
    use.check("tool_choice")
    return use


def output_guide(body: ResponsesRequest) -> tuple[str, str] | None:
    text_format = body.text.format if body.text else None
    if text_format is None or text_format.type == "text":
        return None
    if text_format.type == "json_object":
        return "json", ""
    if text_format.schema_ is None:
        raise InvalidRequest("text.format of type json_schema needs a schema", param="text.format.schema")
    return "json_schema", json.dumps(text_format.schema_)


def reasoning_setting(body: ResponsesRequest) -> ReasoningSetting | None:
    """`reasoning.effort`: "none" turns reasoning off, "minimal" thinks as "low" does, the others
    take their share of max_output_tokens (chat.reasoning.EFFORT_SHARE). Without an effort, the
    model's default."""
    effort = body.reasoning.effort if body.reasoning else None
    if effort is None:
        return None
    if effort == "none":
        return ReasoningSetting(enabled=False, budget_tokens=0)
    return ReasoningSetting(enabled=True, effort="low" if effort == "minimal" else effort)


def wants_summary(body: ResponsesRequest) -> bool:
    """Whether reasoning items carry their text (as `summary`): only when asked, as with OpenAI."""
    return bool(body.reasoning and (body.reasoning.summary or body.reasoning.generate_summary))


def wants_encrypted_reasoning(body: ResponsesRequest) -> bool:
    return "reasoning.encrypted_content" in (body.include or [])


# ---- output items and the response body -------------------------------------------------------
def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    """An assistant message; `text` None: just opened, no content part yet."""
    content = [] if text is None else [output_text_part(text)]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def reasoning_item(item_id: str, text: str, summary: bool, encrypted: bool) -> dict[str, Any]:
    """A reasoning item: its text as the summary when asked for; `encrypted_content`, when asked for,
    is an opaque digest (reasoning sent back is not read, so there is nothing to keep secret)."""
    item: dict[str, Any] = {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if summary and text else [],
    }
    if encrypted:
        item["encrypted_content"] = base64.b64encode(hashlib.sha256(f"{item_id}\n{text}".encode()).digest()).decode()
    return item


def reasoning_token_count(known: int | None, reasoning: str, answer: str, completion_tokens: int) -> int:
    """The reasoning tokens: the count seen in the stream when it is exact, otherwise the share of the
    output tokens the reasoning text takes (an estimate; every output token is billed alike)."""
    if known is not None:
        return known
    if not reasoning:
        return 0
    return round(completion_tokens * len(reasoning) / (len(reasoning) + len(answer)))


def usage_block(
    prompt_tokens: int, completion_tokens: int, cost_pico: int, reasoning_tokens: int = 0
) -> dict[str, Any]:
    return {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": prompt_tokens + completion_tokens,
        "cost": pico_to_usd(cost_pico),
    }


def status_of(finish_reason: str | None) -> tuple[str, dict[str, str] | None]:
    """(status, incomplete_details) for the engine's finish reason."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    return "completed", None


def _tool_choice_echo(body: ResponsesRequest) -> Any:
    choice = body.tool_choice
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else choice.model_dump(exclude_none=True)


def response_body(
    body: ResponsesRequest,
    response_id: str,
    model: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    incomplete_details: dict[str, str] | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Response object: the request's settings echoed, the output, the usage (and its cost)."""
    reasoning = body.reasoning
    text_format = body.text.format if body.text and body.text.format else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": True if body.parallel_tool_calls is None else body.parallel_tool_calls,
        "previous_response_id": body.previous_response_id,
        "reasoning": {
            "effort": reasoning.effort if reasoning else None,
            "summary": (reasoning.summary or reasoning.generate_summary) if reasoning else None,
        },
        "store": body.store,
        "temperature": DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
        "text": {
            "format": text_format.model_dump(by_alias=True, exclude_none=True) if text_format else {"type": "text"}
        },
        "tool_choice": _tool_choice_echo(body),
        "tools": [t.model_dump(by_alias=True, exclude_none=True) for t in body.tools or []],
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "truncation": "disabled",
        "usage": usage,
        "user": body.user,
        "metadata": body.metadata or {},
    }
