"""The OpenAI-compatible `/v1/embeddings` request body."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit on items per request


class EmbeddingsRequest(BaseModel):
    # Unknown fields are ignored, as SDKs and tools send vendor extensions freely.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    # Text only: token-id arrays (list[int] / list[list[int]]) are refused with a clear message,
    # since each model tokenizes its own way and ids from another tokenizer would embed nonsense.
    input: StrictStr | list[StrictStr] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _text_inputs(cls, value: object) -> object:
        items = [value] if isinstance(value, str) else value
        assert isinstance(items, list)
        if not items:
            raise ValueError("input must not be an empty list")
        if not all(isinstance(item, str) for item in items):
            raise ValueError("input must be a string or a list of strings; token-id arrays are not supported")
        if len(items) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"input has {len(items)} items; at most {MAX_EMBEDDING_INPUTS} per request")
        for index, item in enumerate(items):
            if not item:
                raise ValueError(f"input[{index}] is an empty string; every input needs text to embed")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)  # type: ignore[arg-type]
