"""One account's key never reads another's data: every operation of /openapi.json that reads or
changes what an account owns, tried with a stranger's key against the owner's things.

The operations are taken from the served document, so a route added later is swept too: one that
takes an identifier must answer the stranger 404 (or 403) for the owner's, and one that does not must
show the stranger nothing of the owner's (its account and key ids, its request and response ids).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import openai

from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack

# Operations every caller may read the same way (the catalog, health): nothing of an account's.
SHARED = {
    ("get", "/v1/models"),
    ("get", "/v1/models/{model_id}"),
    ("get", "/v1/health"),
    ("get", "/v1/billing/packages"),
    ("get", "/v1/auth/signup-mode"),
}
# Operations that create or spend act on the caller's own account whatever they are given; the one
# that names another resource (previous_response_id) is checked by name below.
ACTING = {"post", "patch"}


def owned_things(lexora: RunningStack) -> tuple[Any, dict[str, str], dict[str, str]]:
    """The owner: an account with a chat answer, a stored response, usage recorded."""
    owner = lexora.create_account()
    sdk = openai.OpenAI(base_url=lexora.base_url, api_key=owner.api_key, max_retries=0)
    chat = sdk.chat.completions.with_raw_response.create(
        model=LOCAL_CHAT_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    stored = sdk.responses.create(model=LOCAL_CHAT_MODEL, input="Hello", max_output_tokens=2)
    lexora.wait_for_usage_rows(owner.account_id, 2)
    (key,) = lexora.admin_cli("list-keys", "--account", owner.account_id)["keys"]
    secrets = {
        "account id": owner.account_id,
        "request id": chat.headers["x-request-id"],
        "response id": stored.id,
        "chat id": chat.parse().id,
        "key id": key["key_id"],
        "key prefix": key["display_prefix"].rstrip("…"),
    }
    identifiers = {"response_id": stored.id, "account_id": owner.account_id, "key_id": key["key_id"]}
    return owner, secrets, identifiers


def test_a_strangers_key_reads_nothing_an_account_owns(lexora: RunningStack) -> None:
    owner, secrets, identifiers = owned_things(lexora)
    stranger = lexora.create_account()
    headers = {"Authorization": f"Bearer {stranger.api_key}"}
    document = httpx.get(lexora.base_url.removesuffix("/v1") + "/openapi.json").json()
    swept = []
    for path, operations in document["paths"].items():
        for method in operations:
            if (method, path) in SHARED or method in ACTING:
                continue
            parameters = re.findall(r"{(\w+)}", path)
            missing = [name for name in parameters if name not in identifiers]
            assert not missing, f"{method.upper()} {path}: no owned thing to try for {missing}; add one here"
            url = lexora.base_url.removesuffix("/v1") + path.format(**identifiers)
            response = httpx.request(method.upper(), url, headers=headers, timeout=30)
            swept.append(f"{method.upper()} {path}")
            # 403: what only an administrator (or a session) may do gives this key nothing at all
            if parameters:
                assert response.status_code in (403, 404), f"{method.upper()} {url}: {response.text}"
                continue
            assert response.status_code in (200, 403), f"{method.upper()} {url}: {response.text}"
            leaked = [what for what, value in secrets.items() if value in response.text]
            assert not leaked, f"{method.upper()} {path} shows the stranger the owner's {leaked}: {response.text[:500]}"
    assert set(swept) >= {
        "GET /v1/usage",
        "GET /v1/key",
        "GET /v1/keys",
        "GET /v1/credits",
        "GET /v1/credits/transactions",
        "DELETE /v1/responses/{response_id}",
        "DELETE /v1/keys/{key_id}",
    }

    # What acts on the caller's account cannot reach into another's.
    continued = httpx.post(
        f"{lexora.base_url}/responses",
        headers=headers,
        json={"model": LOCAL_CHAT_MODEL, "input": "Go on", "previous_response_id": secrets["response id"]},
        timeout=60,
    )
    assert continued.status_code == 404 and continued.json()["error"]["param"] == "previous_response_id"
    # ... and the owner still has everything the stranger tried to delete.
    owner_headers = {"Authorization": f"Bearer {owner.api_key}"}
    kept = httpx.get(f"{lexora.base_url}/responses/{secrets['response id']}", headers=owner_headers)
    assert kept.status_code == 200
    assert httpx.get(f"{lexora.base_url}/models", headers=owner_headers).status_code == 200  # the key still works
    assert lexora.balance(stranger.account_id).held_micro == 0
