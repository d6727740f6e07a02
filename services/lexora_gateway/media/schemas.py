"""The request bodies of `/v1/embeddings` (OpenAI's) and `/v1/images/generations` (Lexora's FLUX
parameters, plus OpenAI's `size`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator

from lexora_gateway.errors import ParamValueError

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit on items per request
MIN_SIDE, MAX_SIDE, DEFAULT_SIDE = 256, 2048, 768
SIDE_MULTIPLE = 16  # FLUX packs 2x2 patches of latents 8x smaller than the image
MAX_PROMPT_CHARS = 4000
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


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


class ImageGenerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    width: int = Field(default=DEFAULT_SIDE, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=SIDE_MULTIPLE)
    height: int = Field(default=DEFAULT_SIDE, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=SIDE_MULTIPLE)
    # OpenAI clients send the size as "WIDTHxHEIGHT" instead; it must agree with width/height if both come.
    size: str | None = Field(default=None, pattern=r"^(auto|[0-9]+x[0-9]+)$")
    num_inference_steps: int = Field(default=4, ge=1, le=50)
    guidance_scale: float = Field(default=0.0, ge=0, le=20)
    n: Literal[1] = 1  # one image per request
    response_format: Literal["b64_json"] = "b64_json"  # no hosted URLs: the image comes in the response
    output_format: Literal["png"] = "png"
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stream: Literal[False] = False
    user: str | None = None

    @model_validator(mode="after")
    def _size(self) -> ImageGenerationRequest:
        if self.size is None or self.size == "auto":
            return self
        match = _SIZE.match(self.size)
        if match is None:
            raise ParamValueError(f"size must look like '768x768' (width x height), not {self.size!r}", "size")
        width, height = int(match[1]), int(match[2])
        for side, value in (("width", width), ("height", height)):
            if not MIN_SIDE <= value <= MAX_SIDE or value % SIDE_MULTIPLE:
                raise ParamValueError(
                    f"size {self.size!r}: {side} must be {MIN_SIDE}-{MAX_SIDE} and a multiple of {SIDE_MULTIPLE}",
                    "size",
                )
        given = self.model_fields_set
        if ("width" in given and self.width != width) or ("height" in given and self.height != height):
            raise ParamValueError(f"size {self.size!r} disagrees with width={self.width}, height={self.height}", "size")
        self.width, self.height = width, height
        return self
