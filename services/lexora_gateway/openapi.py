"""The OpenAPI document: FastAPI's, plus the request bodies the routes parse themselves.

Routes read their bodies by hand (so a bad key is a 401 before a bad body is a 400, as with
OpenAI), which FastAPI cannot see; the schemas are added here from the same pydantic models that
validate the bodies, so the document always matches what the server accepts. The routes that take
an API key are those that depend on `CurrentIdentity`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from lexora_contracts.usage_api import MAX_USAGE_PAGE
from lexora_gateway.account.schemas import CheckoutCreate
from lexora_gateway.admission.identity import current_identity
from lexora_gateway.anthropic.schemas import CountTokensRequest, MessagesRequest
from lexora_gateway.errors import speaks_anthropic
from lexora_gateway.media.schemas import EmbeddingsRequest, ImageGenerationRequest
from lexora_gateway.openai.responses_schemas import ResponsesRequest
from lexora_gateway.openai.schemas import ChatCompletionRequest, CompletionRequest

REQUEST_BODIES: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
    "/v1/responses": ResponsesRequest,
    "/v1/embeddings": EmbeddingsRequest,
    "/v1/images/generations": ImageGenerationRequest,
    "/v1/messages": MessagesRequest,
    "/v1/messages/count_tokens": CountTokensRequest,
    "/v1/billing/checkout": CheckoutCreate,
}
REF = "#/components/schemas/{model}"
KEY_SECURITY = [{"bearer": []}, {"apiKey": []}]
# Query parameters that routes read by hand, with the bounds the route enforces.
QUERY_PARAMETERS: dict[str, list[dict[str, Any]]] = {
    "/v1/usage": [
        {"name": "start_date", "in": "query", "schema": {"type": "string", "format": "date"}},
        {"name": "end_date", "in": "query", "schema": {"type": "string", "format": "date"}},
        {"name": "model", "in": "query", "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}},
        {
            "name": "page",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_USAGE_PAGE, "default": 1},
        },
    ],
}
# Every error is one of these envelopes (lexora_gateway.errors), never FastAPI's 422 body.
ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "ErrorResponse": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": "string"},
                },
            }
        },
    },
    "AnthropicErrorResponse": {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


def install_openapi(app: FastAPI, routers: Sequence[APIRouter], prefix: str) -> None:
    """`routers`: the API's routers, included in `app` under `prefix`."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app, routers, prefix)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build(app: FastAPI, routers: Sequence[APIRouter], prefix: str) -> dict[str, Any]:
    document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    security = {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    }
    document["components"]["securitySchemes"] = security
    for path, model in REQUEST_BODIES.items():
        operation = document["paths"].get(path, {}).get("post")
        if operation is None:
            continue
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
        }
    for route in (route for router in routers for route in router.routes):
        if isinstance(route, APIRoute) and route.include_in_schema and _takes_a_key(route.dependant):
            for method in route.methods:
                document["paths"][prefix + route.path_format][method.lower()]["security"] = KEY_SECURITY
    for path, parameters in QUERY_PARAMETERS.items():
        if operation := document["paths"].get(path, {}).get("get"):
            operation["parameters"] = [*operation.get("parameters", []), *parameters]
    _document_errors(document)
    return document


def _takes_a_key(dependant: Dependant) -> bool:
    return any(d.call is current_identity or _takes_a_key(d) for d in dependant.dependencies)


def _document_errors(document: dict[str, Any]) -> None:
    """Each operation's errors in its envelope, in place of FastAPI's 422 (which is never sent)."""
    schemas = document["components"]["schemas"]
    schemas.update(ERROR_SCHEMAS)
    for path, item in document["paths"].items():
        name = "AnthropicErrorResponse" if speaks_anthropic(path) else "ErrorResponse"
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["default"] = {
                "description": "An error, in the envelope of the route's protocol",
                "content": {"application/json": {"schema": {"$ref": REF.format(model=name)}}},
            }
    if "#/components/schemas/HTTPValidationError" not in json.dumps(document["paths"]):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
