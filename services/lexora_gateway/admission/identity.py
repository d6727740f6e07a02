"""Who is calling: the API key from `Authorization: Bearer` or `x-api-key`, verified by auth.

Routes ask for it in their signature (`identity: CurrentIdentity`). FastAPI resolves it before the
route runs, so the key is checked before the body is read: a bad key is a 401 before a bad body is
a 400, as with OpenAI. A refusal is rendered in the envelope of the route's protocol, like every
error (lexora_gateway.errors).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lexora_contracts.errors import Unauthorized
from lexora_contracts.messages import Identity
from lexora_gateway.state import StateDep

IDENTITY_SCOPE_KEY = "lexora.identity"


def api_key_of(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get("x-api-key") or None


async def current_identity(request: Request, state: StateDep) -> Identity:
    api_key = api_key_of(request)
    if api_key is None:
        raise Unauthorized("Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'")
    identity = await state.keys.identity(api_key)
    request.scope[IDENTITY_SCOPE_KEY] = identity  # the edge middleware gives its response rate headers
    return identity


CurrentIdentity = Annotated[Identity, Depends(current_identity)]
