"""Tool calling for any chat model, protocol-free and pure.

The tools are described to the model in its system prompt, and a call is a JSON object
{"name": ..., "arguments": {...}}. When the client forces a call (OpenAI "required" or a named
function, Anthropic "any" or "tool"), the engine's guided decoding constrains the output to exactly
such an object for the allowed tools' argument schemas, so the call is always well-formed.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.messages import ChatTurn

ToolMode = Literal["auto", "none", "required"]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass
class ToolUse:
    """What the client offered and demanded."""

    tools: list[ToolSpec] = field(default_factory=list)
    mode: ToolMode = "auto"
    forced_name: str | None = None  # a specific tool the client requires

    @property
    def active(self) -> bool:
        return bool(self.tools) and self.mode != "none"

    @property
    def forced(self) -> bool:
        return self.active and (self.mode == "required" or self.forced_name is not None)

    def check(self, param: str) -> None:
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise InvalidRequest("Tool names must be unique", param=param)
        if self.forced_name is not None and self.forced_name not in names:
            raise InvalidRequest(f"tool_choice names '{self.forced_name}', which is not among the tools", param=param)
        if self.mode == "required" and not self.tools:
            raise InvalidRequest("tool_choice requires a tool call but no tools were given", param=param)


def call_text(name: str, arguments: dict[str, Any]) -> str:
    """An earlier call as the model wrote it, for conversation history."""
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


def with_instructions(messages: list[ChatTurn], use: ToolUse) -> list[ChatTurn]:
    if not use.active:
        return messages
    catalog = "\n".join(
        json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters}, ensure_ascii=False)
        for t in _allowed(use)
    )
    how = (
        "You must call a tool now. Reply with only a JSON object"
        if use.forced
        else "To call a tool, reply with only a JSON object"
    )
    instructions = (
        f"You can call these tools:\n{catalog}\n\n"
        f'{how}: {{"name": <tool name>, "arguments": <arguments object>}}.'
        + ("" if use.forced else " Otherwise answer normally.")
    )
    if messages and messages[0].role == "system":
        first = ChatTurn(role="system", content=f"{messages[0].content}\n\n{instructions}")
        return [first, *messages[1:]]
    return [ChatTurn(role="system", content=instructions), *messages]


def _allowed(use: ToolUse) -> list[ToolSpec]:
    return [t for t in use.tools if use.forced_name in (None, t.name)]


def guide(use: ToolUse) -> tuple[str, str] | None:
    """The guided-decoding constraint for a forced call: one object per allowed tool."""
    if not use.forced:
        return None
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters or {"type": "object"}},
            "required": ["name", "arguments"],
        }
        for t in _allowed(use)
    ]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return "json_schema", json.dumps(schema)


def parse_call(text: str, use: ToolUse, id_prefix: str) -> ToolCall | None:
    """The tool call in the model's answer, or None when it answered in prose."""
    if not use.active:
        return None
    try:
        value = json.loads(text.strip())
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("arguments", {}), dict):
        return None
    name = value.get("name")
    if name not in {t.name for t in _allowed(use)}:
        return None
    return ToolCall(id=f"{id_prefix}{uuid.uuid4().hex[:24]}", name=name, arguments=value.get("arguments", {}))
