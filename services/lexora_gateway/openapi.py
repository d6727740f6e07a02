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
from lexora_gateway.account.callers import current_caller
from lexora_gateway.account.schemas import (
    AccountChange,
    CheckoutCreate,
    GrantCreate,
    InvitationCreate,
    KeyCreate,
    SettingsUpdate,
    SignIn,
    SignUp,
)
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
    "/v1/auth/signup": SignUp,
    "/v1/auth/signin": SignIn,
    "/v1/keys": KeyCreate,
    "/v1/admin/accounts/{account_id}/grants": GrantCreate,
    "/v1/admin/invitations": InvitationCreate,
    "PATCH /v1/settings": SettingsUpdate,
    "PATCH /v1/admin/accounts/{account_id}": AccountChange,
}
REF = "#/components/schemas/{model}"
KEY_SECURITY = [{"bearer": []}, {"apiKey": []}]
# The account API also takes the console's session cookie (with an X-CSRF-Token header on changes).
CALLER_SECURITY = [*KEY_SECURITY, {"session": []}]
ACCOUNT_PARAMETER = {"name": "account_id", "in": "query", "schema": {"type": "string"}}
DATE_RANGE = [
    {"name": "start_date", "in": "query", "schema": {"type": "string", "format": "date"}},
    {"name": "end_date", "in": "query", "schema": {"type": "string", "format": "date"}},
]
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
    "/v1/credits/transactions": [
        *DATE_RANGE,
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
        ACCOUNT_PARAMETER,
    ],
    "/v1/keys": [ACCOUNT_PARAMETER],
    "/v1/keys/{key_id}": [ACCOUNT_PARAMETER],
    "/v1/settings": [ACCOUNT_PARAMETER],
    "/v1/admin/accounts": [
        {"name": "q", "in": "query", "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}},
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
        "session": {"type": "apiKey", "in": "cookie", "name": "lexora_session"},
    }
    document["components"]["securitySchemes"] = security
    for where, model in REQUEST_BODIES.items():
        method, _, path = where.rpartition(" ")
        operation = document["paths"].get(path, {}).get((method or "post").lower())
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
        if isinstance(route, APIRoute) and route.include_in_schema:
            security = KEY_SECURITY if _depends_on(route.dependant, current_identity) else None
            security = CALLER_SECURITY if _depends_on(route.dependant, current_caller) else security
            for method in route.methods if security else ():
                document["paths"][prefix + route.path_format][method.lower()]["security"] = security
    for path, parameters in QUERY_PARAMETERS.items():
        for operation in document["paths"].get(path, {}).values():
            wanted = parameters if operation is document["paths"][path].get("get") else [ACCOUNT_PARAMETER]
            wanted = [p for p in wanted if p in parameters]
            operation["parameters"] = [*operation.get("parameters", []), *wanted]
    _document_errors(document)
    return document


def _depends_on(dependant: Dependant, call: object) -> bool:
    return any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


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
