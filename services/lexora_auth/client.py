"""auth's typed client: what other packages may import from lexora_auth.

Every method is one NATS request to auth; auth's typed errors (Unauthorized, NotFound, …) are
raised here as auth raised them.
"""

from __future__ import annotations

from nats.aio.client import Client as NATS

from lexora_contracts import subjects
from lexora_contracts.messages import (
    CreateAccountReply,
    CreateAccountRequest,
    CreateKeyReply,
    CreateKeyRequest,
    HealthProbe,
    HealthReply,
    Identity,
    KeyList,
    KeyRevoked,
    ListKeysRequest,
    Plan,
    RevokeKeyRequest,
    VerifyKeyRequest,
)
from lexora_runtime.bus import call


class AuthClient:
    def __init__(self, nc: NATS):
        self._nc = nc

    async def verify_key(self, api_key: str) -> Identity:
        """Who holds `api_key`, or Unauthorized."""
        return await call(self._nc, subjects.AUTH_KEY_VERIFY, VerifyKeyRequest(api_key=api_key), Identity)

    async def create_account(
        self, plan: Plan = "free", name: str | None = None, timezone: str = "UTC"
    ) -> CreateAccountReply:
        """A new account with its first key (the key is in the reply, the only time it is shown)."""
        request = CreateAccountRequest(plan=plan, name=name, timezone=timezone)
        return await call(self._nc, subjects.AUTH_ACCOUNT_CREATE, request, CreateAccountReply)

    async def create_key(
        self, account_id: str, name: str | None = None, spend_limit_micro: int | None = None
    ) -> CreateKeyReply:
        request = CreateKeyRequest(account_id=account_id, name=name, spend_limit_micro=spend_limit_micro)
        return await call(self._nc, subjects.AUTH_KEY_CREATE, request, CreateKeyReply)

    async def list_keys(self, account_id: str) -> KeyList:
        return await call(self._nc, subjects.AUTH_KEY_LIST, ListKeysRequest(account_id=account_id), KeyList)

    async def revoke_key(self, key_id: str, account_id: str | None = None) -> KeyRevoked:
        """Revoke a key (of `account_id` only, when given); gateways hear of it at once."""
        request = RevokeKeyRequest(key_id=key_id, account_id=account_id)
        return await call(self._nc, subjects.AUTH_KEY_REVOKE, request, KeyRevoked)

    async def health(self, timeout: float = 2.0) -> HealthReply:
        return await call(self._nc, subjects.AUTH_HEALTH, HealthProbe(), HealthReply, timeout=timeout)
