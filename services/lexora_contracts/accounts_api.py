"""What the console and the account API ask of auth about people and accounts: sign-up, sign-in,
sessions, invitations, settings, and an admin's account search and changes (NATS payloads)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from lexora_contracts.messages import Plan

Role = Literal["user", "admin"]
SignupMode = Literal["open", "invite", "closed"]

AUTH_USER_SIGNUP = "auth.v1.user.signup"
AUTH_USER_CREATE = "auth.v1.user.create"  # an operator's: `lexora admin create-user`
AUTH_SESSION_CREATE = "auth.v1.session.create"  # sign-in
AUTH_SESSION_VERIFY = "auth.v1.session.verify"
AUTH_SESSION_DELETE = "auth.v1.session.delete"  # sign-out
AUTH_SESSION_EXTERNAL = "auth.v1.session.external"  # sign-in vouched for by an OpenID Connect provider
AUTH_SIGNUP_MODE_GET = "auth.v1.signupmode.get"
AUTH_INVITATION_CREATE = "auth.v1.invitation.create"
AUTH_ACCOUNT_GET = "auth.v1.account.get"
AUTH_ACCOUNT_SEARCH = "auth.v1.account.search"
AUTH_ACCOUNT_UPDATE = "auth.v1.account.update"  # plan, timezone, disabled
AUTH_USER_UPDATE = "auth.v1.user.update"  # email, password


class AccountInfo(BaseModel):
    account_id: str
    name: str | None
    plan: Plan
    timezone: str
    created_at: datetime
    disabled: bool = False
    email: str | None = None  # its user's, when a user owns it
    role: Role | None = None


class UserInfo(BaseModel):
    user_id: str
    email: str
    role: Role
    account: AccountInfo


class SignUpRequest(BaseModel):
    email: str
    password: str
    timezone: str = "UTC"
    invitation: str | None = None


class CreateUserRequest(BaseModel):
    email: str
    password: str
    role: Role = "user"
    plan: Plan = "free"


class SignInRequest(BaseModel):
    email: str
    password: str
    client: str = "unknown"  # the caller's address: attempts are limited per address and per email


class ExternalSignInRequest(BaseModel):
    """A user an OpenID Connect provider signed in (the gateway checked the ID token): found by
    email, or created when sign-up is open."""

    email: str
    issuer: str
    subject: str


class SessionReply(BaseModel):
    token: str  # shown once to the browser as a cookie; only its hash is stored
    expires_at: datetime
    user: UserInfo


class SessionRequest(BaseModel):
    token: str


class SignedOut(BaseModel):
    signed_out: bool


class SignupModeRequest(BaseModel):
    pass


class SignupModeReply(BaseModel):
    mode: SignupMode


class InvitationRequest(BaseModel):
    created_by: str
    email: str | None = None


class InvitationReply(BaseModel):
    token: str
    expires_at: datetime


class AccountRequest(BaseModel):
    account_id: str


class AccountSearchRequest(BaseModel):
    query: str = ""  # part of an email, an account id or an account name; empty: the newest
    limit: int = Field(default=50, ge=1, le=200)


class AccountList(BaseModel):
    accounts: list[AccountInfo]


class AccountUpdate(BaseModel):
    account_id: str
    plan: Plan | None = None
    timezone: str | None = None
    disabled: bool | None = None


class UserUpdate(BaseModel):
    user_id: str
    email: str | None = None
    current_password: str | None = None  # required to change either
    new_password: str | None = None
