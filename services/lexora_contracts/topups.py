"""Credit top-ups: the NATS messages and subjects between the gateway and billing.

Kept apart from `messages.py`/`subjects.py`/`errors.py` so top-ups can evolve on their own; the
subjects follow the same `<service>.v1.<noun>.<verb>` scheme.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

# ---- subjects (request/reply, gateway → billing) ----------------------------------------------
BILLING_PACKAGES_LIST = "billing.v1.packages.list"
BILLING_CHECKOUT_CREATE = "billing.v1.checkout.create"
BILLING_WEBHOOK_STRIPE = "billing.v1.webhook.stripe"

# How long the gateway waits for a checkout session. Billing gives up on Stripe before this
# (its `stripe_timeout_s` is capped below it), so a slow Stripe answers 502, never a NATS timeout.
CHECKOUT_CREATE_TIMEOUT_S = 30.0


# ---- NATS messages ----------------------------------------------------------------------------
class PackagesRequest(BaseModel):
    pass


class PackageInfo(BaseModel):
    id: str
    credits: int
    price_cents: int
    bonus_credits: int  # credits beyond 100 per USD


class PackagesReply(BaseModel):
    packages: list[PackageInfo]
    custom_min_cents: int
    custom_max_cents: int
    credits_per_usd: int
    checkout_available: bool  # false: no Stripe key, credit comes from admin grants


class CheckoutRequest(BaseModel):
    account_id: str
    package: str | None = None
    amount_usd: Decimal | None = None


class CheckoutReply(BaseModel):
    session_id: str
    url: str
    package: str | None  # None for a custom amount
    credits: int
    price_cents: int
    credit_micro: int  # what the account will be credited, in micro-USD


class StripeWebhookRequest(BaseModel):
    payload: str = Field(description="the request body exactly as received (the signature covers it)")
    signature: str | None = Field(default=None, description="the Stripe-Signature header")


class StripeWebhookReply(BaseModel):
    outcome: Literal["applied", "duplicate", "ignored"]
    event_id: str
    event_type: str
    session_id: str | None = None
    reason: str = ""
