"""/openapi.json describes what the server accepts: bodies it validates, with the same rules."""

from __future__ import annotations

import httpx
import jsonschema
import pytest

from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack


@pytest.fixture(scope="module")
def document(lexora: RunningStack) -> dict:
    response = httpx.get(lexora.base_url.removesuffix("/v1") + "/openapi.json")
    assert response.status_code == 200
    return response.json()


def body_schema(document: dict, path: str) -> dict:
    ref = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return {"$ref": ref, "components": document["components"]}


def test_every_api_route_is_documented(document: dict) -> None:
    assert document["openapi"].startswith("3.")
    paths = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages", "/v1/models", "/v1/usage")
    for path in (*paths, "/v1/key", "/v1/responses/{response_id}"):
        assert path in document["paths"], path
    assert {"bearer", "apiKey"} <= set(document["components"]["securitySchemes"])


@pytest.mark.parametrize(
    ("path", "body", "valid"),
    [
        ("/v1/chat/completions", {"model": LOCAL_CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]}, True),
        (
            "/v1/chat/completions",
            {"model": LOCAL_CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 3},
            False,
        ),
        ("/v1/chat/completions", {"model": LOCAL_CHAT_MODEL}, False),
        (
            "/v1/messages",
            {"model": LOCAL_CHAT_MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
            True,
        ),
        ("/v1/messages", {"model": LOCAL_CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]}, False),
        ("/v1/completions", {"model": LOCAL_CHAT_MODEL, "prompt": "Once", "max_tokens": 2}, True),
        ("/v1/responses", {"model": LOCAL_CHAT_MODEL, "input": "hi", "max_output_tokens": 4}, True),
        (
            "/v1/responses",
            {
                "model": LOCAL_CHAT_MODEL,
                "input": [{"role": "user", "content": "hi"}, {"type": "reasoning", "summary": []}],
                "tools": [{"type": "web_search"}, {"type": "function", "name": "f", "parameters": {}}],
                "max_output_tokens": 4,
                "store": False,
            },
            True,
        ),
        ("/v1/responses", {"model": LOCAL_CHAT_MODEL, "input": "hi", "temperature": 3}, False),
        ("/v1/responses", {"model": LOCAL_CHAT_MODEL, "input": [{"role": "robot", "content": "hi"}]}, False),
    ],
)
def test_the_document_and_the_server_agree(
    lexora: RunningStack, document: dict, path: str, body: dict, valid: bool
) -> None:
    schema_says = jsonschema.Draft202012Validator(body_schema(document, path)).is_valid(body)
    assert schema_says is valid
    account = lexora.create_account()
    response = httpx.post(
        lexora.base_url.removesuffix("/v1") + path,
        json=body,
        headers={"Authorization": f"Bearer {account.api_key}"},
        timeout=60,
    )
    assert (response.status_code == 200) is valid, response.text
    if not valid:
        assert response.status_code == 400
