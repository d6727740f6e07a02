"""Anthropic Messages API schemas (the subset of content the platform understands, validated).

Fields the platform does not know (`cache_control`, `container`, `mcp_servers`, a server tool's
`max_uses`, ...) are ignored, never refused: Anthropic's API grows faster than any gateway, and
clients such as Claude Code send what its newest models take."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from lexora_gateway.chat import MAX_MESSAGES


class _Block(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextBlock(_Block):
    type: Literal["text"]
    text: str


class ImageSource(_Block):
    type: Literal["base64", "url"]
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class ImageBlock(_Block):
    type: Literal["image"]
    source: ImageSource


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] | None = None
    is_error: bool = False


class ThinkingBlock(_Block):
    type: Literal["thinking", "redacted_thinking"]
    thinking: str | None = None


ContentBlock = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock, Field(discriminator="type")
]


class Message(_Block):
    # "system" mid-conversation, as Claude Code sends it: a system turn at that position.
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


class Tool(_Block):
    """A client tool (no `type`, or "custom"): the model may call it with input to `input_schema`."""

    type: Literal["custom"] | None = None
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any]

    hosted: ClassVar[bool] = False


class ServerTool(_Block):
    """A tool Anthropic runs itself (`web_search_20250305`, `code_execution_*`, `bash_*`, ...): a
    versioned `type`, a name, no `input_schema`. The gateway runs none: anthropic.translation leaves them
    out of what the model sees and reports them. (A "custom" tool without `input_schema` lands here
    too, and is refused there.)"""

    type: str = Field(min_length=1)
    name: str = Field(min_length=1, max_length=128)

    @property
    def hosted(self) -> bool:
        return self.type != "custom"


# Tried in order: a tool with an input_schema is a client tool, one with another type a server tool.
AnyTool = Tool | ServerTool


class ToolChoice(_Block):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None  # at most one tool_use block in the answer


class Thinking(_Block):
    # "adaptive": the model decides how much to think (Anthropic's newest models).
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(default=None, ge=1)
    # "omitted": thinking blocks come back with empty text (their signature still set).
    display: Literal["summarized", "omitted"] | None = None


Effort = Literal["low", "medium", "high", "xhigh", "max"]


class OutputConfig(_Block):
    effort: Effort | None = None


class ContextEdit(_Block):
    type: str  # clear_thinking_20251015, clear_tool_uses_20250919, ...


class ContextManagement(_Block):
    edits: list[ContextEdit] = Field(default_factory=list)


class MessagesRequest(_Block):
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1, le=32768)
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    system: str | list[TextBlock] | None = None
    temperature: float = Field(default=0.7, ge=0, le=1)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=2**31 - 1)  # the engine takes an int32
    stop_sequences: list[str] = Field(default_factory=list, max_length=16)
    stream: bool = False
    metadata: Any = None  # accepted in any shape, not used
    tools: list[AnyTool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    context_management: ContextManagement | None = None  # see docs/anthropic.md: what applies


class CountTokensRequest(_Block):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    system: str | list[TextBlock] | None = None
    tools: list[AnyTool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    context_management: ContextManagement | None = None
