"""Who calls the account API: a signed-in browser (the session cookie) or an API key.

A cookie caller must also send the CSRF token (`X-CSRF-Token`, lexora_console.csrf) on every
request that changes something: the cookie alone proves only that the browser sent it, not that our
page asked it to. API keys are not sent by browsers on their own, so they need no token.

Keys, settings and the admin routes are for a session or an admin's key; a plain API key reads its
own account's transactions (and keeps /v1/usage, /v1/key, /v1/credits) but cannot mint keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from lexora_console import cookies, csrf
from lexora_contracts.accounts_api import UserInfo
from lexora_contracts.errors import Forbidden, InvalidRequest, Unauthorized
from lexora_contracts.messages import Identity
from lexora_gateway.admission.identity import IDENTITY_SCOPE_KEY, api_key_of
from lexora_gateway.state import StateDep

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_ID_LENGTH = 64


def checked_id(value: str, name: str) -> str:
    """An account or key id as the API takes it: what the database can hold, else a 400."""
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise InvalidRequest(f"'{name}' is not a valid id", param=name)
    return value


@dataclass(frozen=True)
class Caller:
    account_id: str
    admin: bool
    actor: str  # who, in the ledger and the logs: the user's email or the key's id
    user: UserInfo | None = None
    identity: Identity | None = None

    @property
    def by_key(self) -> bool:
        return self.identity is not None


def session_token_of(request: Request) -> str | None:
    return request.cookies.get(cookies.SESSION) or None


async def current_caller(request: Request, state: StateDep) -> Caller:
    api_key = api_key_of(request)
    if api_key is not None:
        identity = await state.keys.identity(api_key)
        request.scope[IDENTITY_SCOPE_KEY] = identity
        return Caller(identity.account_id, identity.admin, identity.key_id, identity=identity)
    token = session_token_of(request)
    if token is None:
        raise Unauthorized("Sign in, or send an API key as 'Authorization: Bearer <key>'")
    user = await state.auth.verify_session(token)
    if request.method not in SAFE_METHODS:
        secret = state.settings.console_secret.get_secret_value()
        if not csrf.submitted_matches(secret, request.cookies.get(csrf.COOKIE), request.headers.get(csrf.HEADER)):
            raise Forbidden("Missing or wrong CSRF token: reload the page and try again")
    return Caller(user.account.account_id, user.role == "admin", user.email, user=user)


async def console_caller(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
    """A signed-in user, or an admin's API key: what may manage keys and settings."""
    if caller.by_key and not caller.admin:
        raise Forbidden("This route takes a signed-in session or an admin's API key, not an ordinary API key")
    return caller


async def admin_caller(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
    if not caller.admin:
        raise Forbidden("Only an administrator may do this")
    return caller


def identity_of(caller: Caller) -> Identity:
    """The caller as an Identity, for routes written for keys (/v1/usage): a session stands for its
    account, with the account's plan and timezone."""
    if caller.identity is not None:
        return caller.identity
    assert caller.user is not None
    account = caller.user.account
    return Identity(
        account_id=account.account_id,
        key_id=f"session:{caller.user.user_id}",
        plan=account.plan,
        timezone=account.timezone,
        admin=caller.admin,
    )


def account_for(caller: Caller, account_id: str | None) -> str:
    """The account a request is about: the caller's own, or (for an admin) the one it names."""
    if not account_id or account_id == caller.account_id:
        return caller.account_id
    if not caller.admin:
        raise Forbidden("Only an administrator may act on another account")
    return checked_id(account_id, "account_id")


AnyCaller = Annotated[Caller, Depends(current_caller)]
ConsoleCaller = Annotated[Caller, Depends(console_caller)]
AdminCaller = Annotated[Caller, Depends(admin_caller)]
