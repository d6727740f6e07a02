"""The HTTP request bodies of the account routes (what billing is asked over NATS is in
lexora_contracts.topups)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field

from lexora_contracts.messages import Plan


# The body of POST /v1/billing/checkout.
class CheckoutCreate(BaseModel):
    """Either a package id or a custom amount in USD (a JSON number or a string such as "25.50").

    Which one, and whether it is valid, billing decides (it owns the packages and the limits).
    """

    package: str | None = None
    amount_usd: Decimal | None = None


class SignUp(BaseModel):
    """The body of POST /v1/auth/signup."""

    email: str
    password: str
    timezone: str = "UTC"
    invitation: str | None = None  # the token of an invitation link (sign-up mode `invite`)


class SignIn(BaseModel):
    """The body of POST /v1/auth/signin."""

    email: str
    password: str


class KeyCreate(BaseModel):
    """The body of POST /v1/keys: a name, and an optional cap on what the key may spend, in USD."""

    name: str = Field(min_length=1, max_length=200)
    spend_limit_usd: Decimal | None = Field(default=None, ge=0, le=1_000_000)


class SettingsUpdate(BaseModel):
    """The body of PATCH /v1/settings. Email and password changes need the current password."""

    timezone: str | None = Field(default=None, max_length=64)
    email: str | None = Field(default=None, max_length=320)
    current_password: str | None = None
    new_password: str | None = None


class GrantCreate(BaseModel):
    """The body of POST /v1/admin/accounts/{account_id}/grants."""

    amount_usd: Decimal = Field(gt=0, le=1_000_000)
    reason: str = Field(min_length=1, max_length=500)


class AccountChange(BaseModel):
    """The body of PATCH /v1/admin/accounts/{account_id}."""

    plan: Plan | None = None
    disabled: bool | None = None


class InvitationCreate(BaseModel):
    """The body of POST /v1/admin/invitations: optionally the only email that may use it."""

    email: str | None = Field(default=None, max_length=320)
