"""The OpenAI-compatible request bodies of /v1/chat/completions and /v1/completions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lexora_gateway.chat import MAX_MESSAGES

MAX_TOKENS_CEILING = 32768


def stop_sequences(stop: str | list[str] | None) -> list[str]:
    """OpenAI's `stop` may be one string or a list of them."""
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: str  # a base64 data URI or an https URL; checked in lexora_gateway.chat.image_inputs
    detail: str = "auto"  # "auto" | "low" | "high", checked there too so the error names the field


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCallIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None  # assistant turns that called tools
    tool_call_id: str | None = None  # tool turns: the call this answers

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolDef(BaseModel):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


ReasoningEffort = Literal["low", "medium", "high"]


class ReasoningConfig(BaseModel):
    """OpenRouter's `reasoning` object. Strict types: a string where a number or a boolean belongs
    is a client bug worth a 400, not a guess. How the fields combine is decided (and refused when
    contradictory) in lexora_gateway.openai.translation."""

    model_config = ConfigDict(extra="ignore")

    effort: ReasoningEffort | None = None
    max_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS_CEILING, strict=True)
    enabled: bool | None = Field(default=None, strict=True)
    exclude: bool = Field(default=False, strict=True)


class GenerationParameters(BaseModel):
    """What chat and legacy completions share: the model, limits and sampling, with the contract's
    bounds and defaults in one place."""

    # Unknown fields are ignored, as SDKs and tools send vendor extensions freely.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CEILING)
    temperature: float = Field(default=0.7, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    n: Literal[1] = 1
    user: str | None = None
    presence_penalty: float = Field(default=0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0, ge=-2, le=2)

    def stop_list(self) -> list[str]:
        return stop_sequences(self.stop)


class ChatCompletionRequest(GenerationParameters):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CEILING)
    response_format: ResponseFormat | None = None
    tools: list[ToolDef] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning: ReasoningConfig | None = None
    reasoning_effort: ReasoningEffort | None = None  # shorthand for reasoning.effort

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(GenerationParameters):
    """The legacy /v1/completions request: a raw prompt, no chat template."""

    # Token-id prompts (list[int], list[list[int]]) are accepted here only to be refused with a
    # clear message in the translation; a list of strings is one choice per prompt.
    prompt: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
        | Annotated[list[int], Field(min_length=1)]
        | Annotated[list[list[int]], Field(min_length=1)]
    )
    echo: Literal[False] = False
    suffix: None = None

    def single_prompt(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) == 1 and isinstance(self.prompt[0], str):
            return self.prompt[0]
        raise ValueError("one prompt per request")

    def prompt_texts(self) -> list[str] | None:
        """The text prompts, one choice each; None when the prompt is token ids."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        texts = [p for p in self.prompt if isinstance(p, str)]
        return texts if len(texts) == len(self.prompt) else None
