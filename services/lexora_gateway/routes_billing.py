"""Credit top-ups: the package list, Stripe Checkout sessions, and Stripe's webhook.

Billing owns the packages, the Stripe keys and the ledger; these routes only authenticate and
carry bytes. The webhook route takes no API key: Stripe's signature over the raw body is its
authentication, checked by billing.
"""

from __future__ import annotations

from typing import TypeVar

import nats
from fastapi import APIRouter, Request
from fastapi.responses import Response
from nats.micro.request import ERROR_CODE_HEADER
from pydantic import BaseModel

from lexora_contracts.errors import ErrorInfo, InternalError, InvalidRequest
from lexora_contracts.topups import (
    BILLING_CHECKOUT_CREATE,
    BILLING_PACKAGES_LIST,
    BILLING_WEBHOOK_STRIPE,
    CHECKOUT_CREATE_TIMEOUT_S,
    CheckoutCreate,
    CheckoutReply,
    CheckoutRequest,
    PackagesReply,
    PackagesRequest,
    StripeWebhookReply,
    StripeWebhookRequest,
    topup_error_from_info,
)
from lexora_gateway.authn import authenticate
from lexora_gateway.http import JSONBody, parse_body
from lexora_gateway.state import GatewayState, StateDep
from lexora_runtime.bus import encode, request_headers

router = APIRouter()

Rep = TypeVar("Rep", bound=BaseModel)

# Stripe's events are a few KiB; anything far larger is not from Stripe.
MAX_WEBHOOK_BYTES = 512 * 1024


def usd_from_cents(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


async def call_billing(
    state: GatewayState, subject: str, payload: BaseModel, reply_model: type[Rep], timeout: float = 5.0
) -> Rep:
    """Like `lexora_runtime.bus.call`, but also rebuilds the top-up errors (501/502), which the
    shared error hierarchy does not know yet."""
    try:
        msg = await state.nc.request(subject, encode(payload), timeout=timeout, headers=request_headers())
    except nats.errors.NoRespondersError as exc:
        raise InternalError("The billing service is not running") from exc
    except nats.errors.TimeoutError as exc:
        raise InternalError("The billing service did not answer in time") from exc
    if msg.headers and msg.headers.get(ERROR_CODE_HEADER):
        raise topup_error_from_info(ErrorInfo.model_validate_json(msg.data))
    return reply_model.model_validate_json(msg.data)


@router.get("/billing/packages")
async def list_packages(state: StateDep) -> Response:
    reply = await call_billing(state, BILLING_PACKAGES_LIST, PackagesRequest(), PackagesReply)
    return JSONBody(
        {
            "object": "list",
            "data": [
                {
                    "id": p.id,
                    "object": "credit_package",
                    "credits": p.credits,
                    "bonus_credits": p.bonus_credits,
                    "price_usd": usd_from_cents(p.price_cents),
                }
                for p in reply.packages
            ],
            "custom_amount": {
                "min_usd": usd_from_cents(reply.custom_min_cents),
                "max_usd": usd_from_cents(reply.custom_max_cents),
                "credits_per_usd": reply.credits_per_usd,
            },
            "checkout_available": reply.checkout_available,
        }
    )


@router.post("/billing/checkout")
async def create_checkout(request: Request, state: StateDep) -> Response:
    identity = await authenticate(request, state)
    body = parse_body(CheckoutCreate, await request.body())
    reply = await call_billing(
        state,
        BILLING_CHECKOUT_CREATE,
        CheckoutRequest(account_id=identity.account_id, package=body.package, amount_usd=body.amount_usd),
        CheckoutReply,
        timeout=CHECKOUT_CREATE_TIMEOUT_S,
    )
    return JSONBody(
        {
            "id": reply.session_id,
            "object": "checkout.session",
            "url": reply.url,
            "package": reply.package,
            "credits": reply.credits,
            "amount_usd": usd_from_cents(reply.price_cents),
        }
    )


@router.post("/billing/stripe/webhook", include_in_schema=False)
async def stripe_webhook(request: Request, state: StateDep) -> Response:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_WEBHOOK_BYTES:
            raise InvalidRequest("The webhook body is too large to be a Stripe event")
    try:
        payload = raw.decode("utf-8")  # Stripe signs the UTF-8 text of the body
    except UnicodeDecodeError as exc:
        raise InvalidRequest("The webhook body is not UTF-8") from exc
    reply = await call_billing(
        state,
        BILLING_WEBHOOK_STRIPE,
        StripeWebhookRequest(payload=payload, signature=request.headers.get("stripe-signature")),
        StripeWebhookReply,
    )
    # Any 2xx tells Stripe to stop re-delivering; an error status makes it retry later.
    return JSONBody({"received": True, **reply.model_dump()})
