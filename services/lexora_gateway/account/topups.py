"""Credit top-ups: the package list, Stripe Checkout sessions, and Stripe's webhook.

Billing owns the packages, the Stripe keys and the ledger; these routes only authenticate and
carry bytes. The webhook route takes no API key: Stripe's signature over the raw body is its
authentication, checked by billing.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.topups import CheckoutRequest
from lexora_gateway.account.schemas import CheckoutCreate
from lexora_gateway.admission.identity import CurrentIdentity
from lexora_gateway.http import JSONBody, parse_body
from lexora_gateway.state import StateDep

router = APIRouter()

# Stripe's events are a few KiB; anything far larger is not from Stripe.
MAX_WEBHOOK_BYTES = 512 * 1024


def usd_from_cents(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


@router.get("/billing/packages")
async def list_packages(state: StateDep) -> Response:
    reply = await state.billing.packages()
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
async def create_checkout(request: Request, identity: CurrentIdentity, state: StateDep) -> Response:
    body = parse_body(CheckoutCreate, await request.body())
    reply = await state.billing.create_checkout(
        CheckoutRequest(account_id=identity.account_id, package=body.package, amount_usd=body.amount_usd)
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
    reply = await state.billing.stripe_webhook(payload, request.headers.get("stripe-signature"))
    # Any 2xx tells Stripe to stop re-delivering; an error status makes it retry later.
    return JSONBody({"received": True, **reply.model_dump()})
