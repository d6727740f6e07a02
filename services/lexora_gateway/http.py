"""Small HTTP helpers shared by the protocol routes."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from lexora_gateway.errors import invalid_request_from

M = TypeVar("M", bound=BaseModel)


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def parse_body(model: type[M], raw: bytes) -> M:
    """Strict, as the published schema is: "5" is not an integer, 0 and "true" are not booleans."""
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise invalid_request_from(exc) from exc
