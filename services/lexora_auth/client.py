"""auth's typed client: what other packages may import from lexora_auth.

Every method is one NATS request to auth; auth's typed errors (Unauthorized, NotFound, …) are
raised here as auth raised them.
"""

from __future__ import annotations

from nats.aio.client import Client as NATS

from lexora_contracts import accounts_api as api
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

    # ---- console users and sessions ---------------------------------------------------------------
    async def sign_up(self, request: api.SignUpRequest) -> api.SessionReply:
        """A new user with their own account, signed in (Forbidden when sign-up is closed or the
        invitation is not valid, Conflict when the email is taken)."""
        return await call(self._nc, api.AUTH_USER_SIGNUP, request, api.SessionReply, timeout=10.0)

    async def create_user(self, request: api.CreateUserRequest) -> api.UserInfo:
        return await call(self._nc, api.AUTH_USER_CREATE, request, api.UserInfo, timeout=10.0)

    async def sign_in(self, request: api.SignInRequest) -> api.SessionReply:
        """A new session, Unauthorized for a wrong email or password, or RateLimitExceeded."""
        return await call(self._nc, api.AUTH_SESSION_CREATE, request, api.SessionReply, timeout=10.0)

    async def sign_in_external(self, request: api.ExternalSignInRequest) -> api.SessionReply:
        """A session for a user an OpenID Connect provider vouched for (the caller checked the ID token)."""
        return await call(self._nc, api.AUTH_SESSION_EXTERNAL, request, api.SessionReply, timeout=10.0)

    async def verify_session(self, token: str) -> api.UserInfo:
        return await call(self._nc, api.AUTH_SESSION_VERIFY, api.SessionRequest(token=token), api.UserInfo)

    async def sign_out(self, token: str) -> api.SignedOut:
        return await call(self._nc, api.AUTH_SESSION_DELETE, api.SessionRequest(token=token), api.SignedOut)

    async def signup_mode(self) -> api.SignupModeReply:
        return await call(self._nc, api.AUTH_SIGNUP_MODE_GET, api.SignupModeRequest(), api.SignupModeReply)

    async def create_invitation(self, created_by: str, email: str | None = None) -> api.InvitationReply:
        request = api.InvitationRequest(created_by=created_by, email=email)
        return await call(self._nc, api.AUTH_INVITATION_CREATE, request, api.InvitationReply)

    async def account(self, account_id: str) -> api.AccountInfo:
        return await call(self._nc, api.AUTH_ACCOUNT_GET, api.AccountRequest(account_id=account_id), api.AccountInfo)

    async def search_accounts(self, query: str = "", limit: int = 50) -> api.AccountList:
        request = api.AccountSearchRequest(query=query, limit=limit)
        return await call(self._nc, api.AUTH_ACCOUNT_SEARCH, request, api.AccountList)

    async def update_account(self, request: api.AccountUpdate) -> api.AccountInfo:
        """Change plan, timezone or disabled; gateways drop the account's cached keys at once."""
        return await call(self._nc, api.AUTH_ACCOUNT_UPDATE, request, api.AccountInfo)

    async def update_user(self, request: api.UserUpdate) -> api.UserInfo:
        return await call(self._nc, api.AUTH_USER_UPDATE, request, api.UserInfo, timeout=10.0)

    async def health(self, timeout: float = 2.0) -> HealthReply:
        return await call(self._nc, subjects.AUTH_HEALTH, HealthProbe(), HealthReply, timeout=timeout)
