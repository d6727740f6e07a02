"""The OpenAPI document: FastAPI's, plus the request bodies the routes parse themselves.

Routes read their bodies by hand (so a bad key is a 401 before a bad body is a 400, as with
OpenAI), which FastAPI cannot see; the schemas are added here from the same pydantic models that
validate the bodies, so the document always matches what the server accepts.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from lexora_contracts.anthropic import CountTokensRequest, MessagesRequest
from lexora_contracts.openai import ChatCompletionRequest, CompletionRequest
from lexora_contracts.topups import CheckoutCreate

REQUEST_BODIES: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
    "/v1/messages": MessagesRequest,
    "/v1/messages/count_tokens": CountTokensRequest,
    "/v1/billing/checkout": CheckoutCreate,
}
REF = "#/components/schemas/{model}"


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build(app: FastAPI) -> dict[str, Any]:
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
        operation["security"] = [{"bearer": []}, {"apiKey": []}]
    return document
