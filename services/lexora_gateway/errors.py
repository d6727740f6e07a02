"""The one place errors become HTTP: the OpenAI envelope, or Anthropic's on its routes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import nats.errors
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lexora_contracts.errors import (
    InternalError,
    InvalidRequest,
    LexoraError,
    RequestTimeout,
    RouteNotFound,
    ServiceUnavailable,
)
from lexora_runtime.bus import BUS_UNREACHABLE

ANTHROPIC_ROUTES = ("/v1/messages", "/v1/messages/count_tokens")
# NATS failures that reach the edge untyped (a shared counter or a KV read while the bus is down):
# the request could not be judged, so 503 with Retry-After rather than a 500.
BUS_FAILURES = (nats.errors.TimeoutError, nats.errors.NoRespondersError, *BUS_UNREACHABLE)


def speaks_anthropic(path: str) -> bool:
    return path.removeprefix("/api").rstrip("/") in ANTHROPIC_ROUTES


def openai_error_body(error: LexoraError) -> dict[str, Any]:
    message = getattr(error, "openai_message", error.message)  # ContextLengthExceeded says it OpenAI's way
    return {"error": {"message": message, "type": error.type, "param": error.param, "code": error.code}}


def anthropic_error_body(error: LexoraError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error.anthropic_type, "message": error.message}}


def error_response(error: LexoraError, anthropic: bool = False) -> Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
    if isinstance(error, RequestTimeout):
        headers["Connection"] = "close"  # a client too slow to send its request does not keep the connection
    body = anthropic_error_body(error) if anthropic else openai_error_body(error)
    return JSONResponse(body, status_code=error.status, headers=headers)


def sse_error_event(error: LexoraError) -> bytes:
    return b"data: " + json.dumps(openai_error_body(error)).encode() + b"\n\n"


def anthropic_sse_error_event(error: LexoraError) -> bytes:
    return b"event: error\ndata: " + json.dumps(anthropic_error_body(error)).encode() + b"\n\n"


# What pydantic puts in an error's location besides field names: the member of a union it tried.
_TYPE_TAGS = {"str", "int", "float", "bool", "bytes", "none"}


def _is_tag(part: str | int) -> bool:
    """A union member in pydantic's location (`str`, `list[str]`, `constrained-str`, `NamedToolChoice`)."""
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part or "-" in part or part[:1].isupper())


def _param_name(location: Sequence[str | int]) -> str:
    name = ""
    discriminated = False  # after a tagged union's name, its list index, then the tag value
    for part in location:
        if isinstance(part, int):
            name += f"[{part}]"
        elif _is_tag(part):
            discriminated = "tagged-union[" in part
        elif discriminated:
            discriminated = False
        else:
            name += f".{part}" if name else part
    return name


def _most_specific(errors: Sequence[Any]) -> Any:
    """Of the first field's complaints (one per member of a union), the one that got furthest: the
    deepest, or one whose type matched but whose value did not."""
    first = errors[0]
    field = tuple(first["loc"])
    for index, part in enumerate(field):
        if _is_tag(part):
            field = field[:index]
            break
    alternatives = [e for e in errors if tuple(e["loc"][: len(field)]) == field]
    return max(alternatives, key=lambda e: (len(e["loc"]), not e["type"].endswith("_type")))


class ParamValueError(ValueError):
    """A refusal from a validator that looks at several fields: it names the one to fix, which
    pydantic's location (the whole model) cannot."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def invalid_request_from(exc: ValidationError) -> InvalidRequest:
    """Turn pydantic's first complaint into a message a developer can act on, naming the field."""
    errors = exc.errors()
    first = _most_specific(errors)
    if first["type"] == "json_invalid":
        return InvalidRequest("The request body is not valid JSON")
    named = (first.get("ctx") or {}).get("error")
    if isinstance(named, ParamValueError):
        return InvalidRequest(str(named), param=named.param)
    param = _param_name(first["loc"])
    if not param:
        return InvalidRequest("The request body must be a JSON object")
    if first["type"] == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'", param=param)
    return InvalidRequest(f"Invalid value for '{param}': {first['msg']}", param=param)


def install_error_handlers(app: FastAPI) -> None:
    async def on_lexora_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LexoraError)
        return error_response(exc, speaks_anthropic(request.url.path))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        anthropic = speaks_anthropic(request.url.path)
        if exc.status_code == 404:
            unknown = RouteNotFound("Unknown API route. See /openapi.json for the routes this server offers.")
            return error_response(unknown, anthropic)
        error = InvalidRequest(str(exc.detail))
        body = anthropic_error_body(error) if anthropic else openai_error_body(error)
        return JSONResponse(body, status_code=exc.status_code)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        if isinstance(exc, BUS_FAILURES):
            error: LexoraError = ServiceUnavailable("The message bus cannot be reached; retry in a few seconds")
        else:
            error = InternalError("Internal error")
        return error_response(error, speaks_anthropic(request.url.path))

    app.add_exception_handler(LexoraError, on_lexora_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
