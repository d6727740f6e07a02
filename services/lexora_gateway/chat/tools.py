"""Tool calling for any chat model, protocol-free and pure.

The tools are described to the model in its system prompt, and a call is a JSON object
{"name": ..., "arguments": {...}}, several parallel calls a JSON array of them. Whenever tools are
offered to a model whose engine does guided decoding, it holds the answer to the grammar
tool_grammar.py writes: prose or well-formed calls to offered tools (with tool_choice forcing a
call, calls only, on any engine), so a call always parses. tool_stream.py reads the calls out of
the answer as it is generated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.messages import ChatTurn
from lexora_gateway.chat.tool_grammar import tool_call_grammar

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
    parallel: bool = True  # several calls in one answer (OpenAI parallel_tool_calls)

    @property
    def active(self) -> bool:
        return bool(self.tools) and self.mode != "none"

    @property
    def several(self) -> bool:
        """Whether one answer may hold several calls: when parallel calls are allowed and the
        client did not name the one tool to call."""
        return self.parallel and self.forced_name is None

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


def calls_text(calls: list[tuple[str, dict[str, Any]]]) -> str:
    """Earlier calls as the model writes them, for conversation history: (name, arguments) pairs."""
    written = [{"name": name, "arguments": arguments} for name, arguments in calls]
    return json.dumps(written[0] if len(written) == 1 else written, ensure_ascii=False)


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
        + (" To call several tools at once, reply with a JSON array of such objects." if use.several else "")
        + ("" if use.forced else " Otherwise answer normally.")
    )
    if messages and messages[0].role == "system":
        first = ChatTurn(role="system", content=f"{messages[0].content}\n\n{instructions}")
        return [first, *messages[1:]]
    return [ChatTurn(role="system", content=instructions), *messages]


def _allowed(use: ToolUse) -> list[ToolSpec]:
    return [t for t in use.tools if use.forced_name in (None, t.name)]


# The capability of a model whose engine applies guided decoding (grammars, JSON schemas).
GUIDED_DECODING_CAPABILITY = "json_output"


def guide(use: ToolUse, guided_decoding: bool = True) -> tuple[str, str] | None:
    """The guided-decoding constraint when tools are offered (tool_grammar.py). A model whose engine
    does not declare guided decoding gets it only for a forced call, which nothing else can force;
    under `auto` it answers from the prompt alone, and tool_stream.py tells a call from prose."""
    if not use.active or not (guided_decoding or use.forced):
        return None
    tools = [(t.name, t.parameters) for t in _allowed(use)]
    return "ebnf_grammar", tool_call_grammar(tools, allow_prose=not use.forced, parallel=use.several)
