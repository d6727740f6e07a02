"""Who is calling: the API key from `Authorization: Bearer` or `x-api-key`, verified by auth."""

from __future__ import annotations

from fastapi import Request
from nats.aio.client import Client as NATS

from lexora_contracts import subjects
from lexora_contracts.errors import Unauthorized
from lexora_contracts.messages import Identity, VerifyKeyRequest
from lexora_gateway.auth_cache import KeyCache
from lexora_gateway.key_verifier import KeyVerifier
from lexora_gateway.state import GatewayState
from lexora_runtime.bus import call


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


def verifier_over(nc: NATS, cache: KeyCache) -> KeyVerifier:
    """Keys verified by auth over NATS, through `cache`."""

    async def verify(api_key: str) -> Identity:
        return await call(nc, subjects.AUTH_KEY_VERIFY, VerifyKeyRequest(api_key=api_key), Identity)

    return KeyVerifier(cache, verify)
