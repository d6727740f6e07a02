"""The request body of OpenAI's Responses API (`POST /v1/responses`).

What agents such as Codex CLI send is accepted whole: fields that change nothing here
(`prompt_cache_key`, `client_metadata`, `include`, `service_tier`, `truncation`, ...) are ignored,
never refused. Items and tools the platform cannot act on are told apart in
lexora_gateway.openai.responses_translation: hosted tools are left out (and named in a header),
reasoning items are dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from lexora_gateway.chat import MAX_MESSAGES
from lexora_gateway.openai.schemas import MAX_TOKENS_CEILING


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _kind(default: str, known: str) -> Any:
    """A discriminator on `type` (its tag: the type in CamelCase, which error locations leave out),
    with `default` for an object without one (an "easy" message)."""

    def tag(value: Any) -> str:
        kind = value.get("type", default) if isinstance(value, dict) else getattr(value, "type", default)
        kind = kind if isinstance(kind, str) else default
        return "".join(word.capitalize() for word in kind.split("_"))

    return Discriminator(
        tag, custom_error_type="invalid_type", custom_error_message=f"Unknown type; expected one of {known}"
    )


# ---- content ----------------------------------------------------------------------------------
class InputText(_Part):
    type: Literal["input_text"]
    text: str


class OutputText(_Part):
    type: Literal["output_text"]
    text: str


class Refusal(_Part):
    type: Literal["refusal"]
    refusal: str


class InputImage(_Part):
    type: Literal["input_image"]
    image_url: str | None = None  # a base64 data URI or an https URL; file_id is not served here
    file_id: str | None = None
    detail: str = "auto"


Content = Annotated[
    Annotated[InputText, Tag("InputText")]
    | Annotated[OutputText, Tag("OutputText")]
    | Annotated[Refusal, Tag("Refusal")]
    | Annotated[InputImage, Tag("InputImage")],
    _kind("input_text", "input_text, output_text, refusal, input_image"),
]


# ---- input items ------------------------------------------------------------------------------
class MessageItem(_Part):
    """A message; `type` may be left out (the SDK's "easy" input message)."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Content]
    id: str | None = None


class FunctionCallItem(_Part):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str  # JSON text
    id: str | None = None


class FunctionCallOutputItem(_Part):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[Content]


class CustomToolCallItem(_Part):
    """A call of a freeform ("custom") tool from an earlier turn: history only."""

    type: Literal["custom_tool_call"]
    call_id: str
    name: str
    input: str


class CustomToolCallOutputItem(_Part):
    type: Literal["custom_tool_call_output"]
    call_id: str
    output: str | list[Content]


class DroppedItem(_Part):
    """Items accepted and not fed to the model: reasoning (ours is not read back, encrypted or
    not) and the records of hosted tools' calls (web search, file search, ...)."""

    type: Literal[
        "reasoning",
        "web_search_call",
        "file_search_call",
        "code_interpreter_call",
        "image_generation_call",
        "computer_call",
        "computer_call_output",
        "local_shell_call",
        "local_shell_call_output",
        "mcp_list_tools",
        "mcp_call",
    ]


InputItem = Annotated[
    Annotated[MessageItem, Tag("Message")]
    | Annotated[FunctionCallItem, Tag("FunctionCall")]
    | Annotated[FunctionCallOutputItem, Tag("FunctionCallOutput")]
    | Annotated[CustomToolCallItem, Tag("CustomToolCall")]
    | Annotated[CustomToolCallOutputItem, Tag("CustomToolCallOutput")]
    | Annotated[DroppedItem, Tag("Reasoning")]
    | Annotated[DroppedItem, Tag("WebSearchCall")]
    | Annotated[DroppedItem, Tag("FileSearchCall")]
    | Annotated[DroppedItem, Tag("CodeInterpreterCall")]
    | Annotated[DroppedItem, Tag("ImageGenerationCall")]
    | Annotated[DroppedItem, Tag("ComputerCall")]
    | Annotated[DroppedItem, Tag("ComputerCallOutput")]
    | Annotated[DroppedItem, Tag("LocalShellCall")]
    | Annotated[DroppedItem, Tag("LocalShellCallOutput")]
    | Annotated[DroppedItem, Tag("McpListTools")]
    | Annotated[DroppedItem, Tag("McpCall")],
    _kind(
        "message",
        "message, function_call, function_call_output, custom_tool_call, custom_tool_call_output, reasoning "
        "and the call records of hosted tools",
    ),
]


# ---- tools ------------------------------------------------------------------------------------
# A "function" is never a hosted tool (the discriminator sends it to FunctionTool): the document says
# so too, so that exactly one member of the union matches.
_NOT_FUNCTION: dict[str, Any] = {"not": {"const": "function"}}


class FunctionTool(_Part):
    """The Responses API's flat function tool."""

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    hosted: ClassVar[bool] = False


class HostedTool(_Part):
    """A tool OpenAI runs (`web_search`, `file_search`, `code_interpreter`, `image_generation`,
    `mcp`, ...) or the client runs without a JSON schema (`custom`, `local_shell`): not offered to
    the model here; reported in the response's x-lexora-ignored-tools header."""

    type: str = Field(min_length=1, json_schema_extra=_NOT_FUNCTION)
    name: str | None = None

    hosted: ClassVar[bool] = True

    @property
    def label(self) -> str:
        return self.name or self.type


def _tool_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "Function" if kind == "function" else "Hosted"


ToolDef = Annotated[
    Annotated[FunctionTool, Tag("Function")] | Annotated[HostedTool, Tag("Hosted")], Discriminator(_tool_kind)
]


class FunctionChoice(_Part):
    type: Literal["function"]
    name: str = Field(min_length=1)


class HostedChoice(_Part):
    """A tool_choice forcing a tool other than a function: refused when it names a hosted tool."""

    type: str = Field(min_length=1, json_schema_extra=_NOT_FUNCTION)
    name: str | None = None


ToolChoice = Annotated[
    Annotated[FunctionChoice, Tag("Function")] | Annotated[HostedChoice, Tag("Hosted")], Discriminator(_tool_kind)
]


# ---- settings ---------------------------------------------------------------------------------
ResponsesEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


class ResponsesReasoning(_Part):
    effort: ResponsesEffort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None  # its older name


class TextFormat(_Part):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(_Part):
    format: TextFormat | None = None
    verbosity: str | None = None


class ResponsesRequest(BaseModel):
    # Unknown fields are ignored, as agents send what the newest models take.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str | Annotated[list[InputItem], Field(max_length=MAX_MESSAGES)] = ""
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[ToolDef] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CEILING)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    reasoning: ResponsesReasoning | None = None
    text: TextConfig | None = None
    stream: bool = False
    store: bool = True
    background: bool = False
    metadata: dict[str, str] | None = None
    include: list[str] | None = None
    user: str | None = None
    # Accepted, and change nothing here: the engine caches nothing across requests by key.
    prompt_cache_key: str | None = None
    client_metadata: dict[str, Any] | None = None
