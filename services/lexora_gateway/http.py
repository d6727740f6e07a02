"""Small HTTP helpers shared by the protocol routes."""

from __future__ import annotations

import time
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends
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


async def _received_now() -> float:
    return time.time()


# When the request arrived, before anything else about it is done (its key verified, its body read):
# the job's deadline, price and recorded latency count from here. A route lists it first.
ReceivedAt = Annotated[float, Depends(_received_now)]
