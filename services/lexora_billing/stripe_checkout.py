"""Stripe adapter: Checkout Sessions for top-ups, and verified webhook events turned into grants.

The parameters sent to Stripe and the event → grant decision are pure functions (tested without a
network); `StripeCheckout` is the thin I/O around them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import stripe

from lexora_billing.topups import CUSTOM_PACKAGE, TopUp
from lexora_contracts.errors import InvalidRequest, PaymentProviderError, PaymentsNotConfigured
from lexora_contracts.messages import GrantRequest

log = logging.getLogger("lexora.billing.stripe")

# A session paid by card completes as `paid`; one paid by a delayed method (bank debit) completes
# `unpaid` and is paid later with `async_payment_succeeded`. Either may credit: the grant is keyed
# on the session, so whichever arrives second (or again) is a duplicate.
CREDITING_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})

# Metadata we set on the session with our secret key; the paying client cannot change it.
META_ACCOUNT = "lexora_account_id"
META_PACKAGE = "lexora_package"
META_CREDITS = "lexora_credits"
META_CREDIT_MICRO = "lexora_credit_micro"
META_PRICE_CENTS = "lexora_price_cents"


def session_metadata(account_id: str, topup: TopUp) -> dict[str, str]:
    return {
        META_ACCOUNT: account_id,
        META_PACKAGE: topup.package or CUSTOM_PACKAGE,
        META_CREDITS: str(topup.credits),
        META_CREDIT_MICRO: str(topup.credit_micro),
        META_PRICE_CENTS: str(topup.price_cents),
    }


def checkout_session_params(account_id: str, topup: TopUp, public_url: str) -> dict[str, Any]:
    """The Checkout Session to create: one USD line item at the top-up's price."""
    base = public_url.rstrip("/")
    metadata = session_metadata(account_id, topup)
    return {
        "mode": "payment",
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": "usd",
                    "unit_amount": topup.price_cents,
                    "product_data": {"name": topup.description},
                },
            }
        ],
        "client_reference_id": account_id,
        "metadata": metadata,
        # Also on the payment, so a refund or dispute in the dashboard shows whose top-up it was.
        "payment_intent_data": {"metadata": metadata, "description": topup.description},
        "success_url": f"{base}/billing/success?session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{base}/billing/cancel",
    }


@dataclass(frozen=True)
class WebhookDecision:
    """What a verified event means for the ledger: a grant to apply, or why it is ignored."""

    event_id: str
    event_type: str
    session_id: str | None
    grant: GrantRequest | None
    reason: str = ""


def grant_key(session_id: str) -> str:
    # Keyed on the Checkout Session, not the event: Stripe re-delivers an event with the same id,
    # but a paid session can also reach us as two different events (`completed` and, for delayed
    # payment methods, `async_payment_succeeded`; or an event re-sent from the dashboard or a second
    # webhook endpoint). One session is one payment, so it may credit once whatever the event id.
    return f"stripe-session:{session_id}"


def decide(event: Mapping[str, Any]) -> WebhookDecision:
    """The grant a verified Stripe event calls for, if any. Credit comes only from our metadata."""
    event_id, event_type = str(event.get("id", "")), str(event.get("type", ""))
    session = (event.get("data") or {}).get("object") or {}
    session_id = session.get("id") if session.get("object") == "checkout.session" else None

    def ignore(reason: str) -> WebhookDecision:
        return WebhookDecision(event_id, event_type, session_id, None, reason)

    if event_type not in CREDITING_EVENTS:
        return ignore(f"event type {event_type} does not credit")
    if not session_id:
        return ignore("event carries no checkout session")
    if session.get("payment_status") != "paid":
        return ignore(f"session {session_id} is not paid (payment_status={session.get('payment_status')})")
    metadata = session.get("metadata") or {}
    account_id = metadata.get(META_ACCOUNT)
    credit_micro = str(metadata.get(META_CREDIT_MICRO, ""))
    if not account_id or not credit_micro.isdigit() or int(credit_micro) <= 0:
        return ignore(f"session {session_id} is not a Lexora top-up (no account or credit in its metadata)")
    package = metadata.get(META_PACKAGE, CUSTOM_PACKAGE)
    credits = metadata.get(META_CREDITS, "?")
    grant = GrantRequest(
        account_id=account_id,
        amount_micro=int(credit_micro),
        idempotency_key=grant_key(session_id),
        actor="stripe",
        reason=f"Stripe checkout {session_id}: {package}, {credits} credits, event {event_id}",
        kind="topup",
    )
    return WebhookDecision(event_id, event_type, session_id, grant)


class StripeCheckout:
    """Stripe as billing uses it. Either half works without the other's key."""

    def __init__(
        self, secret_key: str | None, webhook_secret: str | None, public_url: str | None, timeout_s: float
    ) -> None:
        self._webhook_secret = webhook_secret
        self._public_url = public_url
        self._timeout_s = timeout_s
        self._http: stripe.HTTPXClient | None = None
        self._client: stripe.StripeClient | None = None
        if secret_key and public_url:
            self._http = stripe.HTTPXClient(timeout=timeout_s)
            self._client = stripe.StripeClient(secret_key, http_client=self._http, max_network_retries=1)
        elif secret_key:
            log.warning("LEXORA_STRIPE_SECRET_KEY is set but LEXORA_PUBLIC_URL is not: checkout is disabled")

    @property
    def checkout_available(self) -> bool:
        return self._client is not None

    def require_checkout(self) -> None:
        if self._client is None:
            raise PaymentsNotConfigured(
                "Card top-ups are not configured on this server (no Stripe key); "
                "an operator can add credit with `lexora admin grant`"
            )

    async def create_session(self, account_id: str, topup: TopUp) -> tuple[str, str]:
        """Create a Checkout Session; returns (session id, the URL to send the payer to)."""
        self.require_checkout()
        assert self._client is not None and self._public_url is not None
        params = checkout_session_params(account_id, topup, self._public_url)
        try:
            session = await asyncio.wait_for(
                self._client.v1.checkout.sessions.create_async(params=params),  # type: ignore[arg-type]
                self._timeout_s,
            )
        except TimeoutError as exc:
            log.error("stripe checkout session timed out", extra={"fields": {"account_id": account_id}})
            raise PaymentProviderError("The payment provider did not answer in time; try again") from exc
        except stripe.StripeError as exc:
            log.error(
                "stripe checkout session failed",
                extra={"fields": {"account_id": account_id, "error": f"{type(exc).__name__}: {exc}"}},
            )
            raise PaymentProviderError("Could not start a checkout with the payment provider; try again later") from exc
        if not session.url:
            raise PaymentProviderError("The payment provider returned a session without a checkout URL")
        return session.id, session.url

    def verify_event(self, payload: str, signature: str | None) -> dict[str, Any]:
        """Check Stripe's signature (and its timestamp tolerance) and return the event."""
        if not self._webhook_secret:
            raise PaymentsNotConfigured("Stripe webhooks are not configured on this server (no webhook secret)")
        try:
            event = stripe.Webhook.construct_event(payload, signature, self._webhook_secret)
        except stripe.SignatureVerificationError as exc:
            raise InvalidRequest(f"Invalid Stripe signature: {exc.user_message or exc}") from exc
        except (ValueError, TypeError, AttributeError) as exc:
            raise InvalidRequest("The webhook body is not a Stripe event") from exc
        return event.to_dict()  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close_async()
