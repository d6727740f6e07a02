"""Who is calling: the API key from `Authorization: Bearer` or `x-api-key`, verified by auth."""

from __future__ import annotations

from fastapi import Request

from lexora_contracts.errors import Unauthorized
from lexora_contracts.messages import Identity
from lexora_gateway.state import GatewayState


def api_key_of(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get("x-api-key") or None


async def authenticate(request: Request, state: GatewayState) -> Identity:
    api_key = api_key_of(request)
    if api_key is None:
        raise Unauthorized("Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'")
    return await state.keys.identity(api_key)
