"""billing's top-up endpoints: the package list, checkout sessions, and Stripe's webhook events."""

from __future__ import annotations

import logging
from typing import Any

from lexora_billing.ledger import Ledger, utcnow
from lexora_billing.settings import BillingSettings
from lexora_billing.stripe_checkout import StripeCheckout, decide
from lexora_billing.topups import CREDITS_PER_USD, CUSTOM_MAX_CENTS, CUSTOM_MIN_CENTS, PACKAGES, topup_for
from lexora_contracts.topups import (
    BILLING_CHECKOUT_CREATE,
    BILLING_PACKAGES_LIST,
    BILLING_WEBHOOK_STRIPE,
    CheckoutReply,
    CheckoutRequest,
    PackageInfo,
    PackagesReply,
    PackagesRequest,
    StripeWebhookReply,
    StripeWebhookRequest,
)
from lexora_runtime.metrics import ServiceMetrics

log = logging.getLogger("lexora.billing.topups")


def stripe_from(settings: BillingSettings) -> StripeCheckout:
    def reveal(secret: Any) -> str | None:
        return secret.get_secret_value() if secret is not None else None

    return StripeCheckout(
        reveal(settings.stripe_secret_key),
        reveal(settings.stripe_webhook_secret),
        settings.public_url,
        settings.stripe_timeout_s,
    )


class TopUpEndpoints:
    def __init__(self, ledger: Ledger, stripe: StripeCheckout, metrics: ServiceMetrics) -> None:
        self._ledger = ledger
        self._stripe = stripe
        self._metrics = metrics

    def endpoints(self) -> dict[str, Any]:
        return {
            "packages": (BILLING_PACKAGES_LIST, PackagesRequest, self.packages),
            "checkout": (BILLING_CHECKOUT_CREATE, CheckoutRequest, self.checkout),
            "stripe_webhook": (BILLING_WEBHOOK_STRIPE, StripeWebhookRequest, self.stripe_webhook),
        }

    async def packages(self, _: PackagesRequest) -> PackagesReply:
        return PackagesReply(
            packages=[
                PackageInfo(id=p.id, credits=p.credits, price_cents=p.price_cents, bonus_credits=p.bonus_credits)
                for p in PACKAGES
            ],
            custom_min_cents=CUSTOM_MIN_CENTS,
            custom_max_cents=CUSTOM_MAX_CENTS,
            credits_per_usd=CREDITS_PER_USD,
            checkout_available=self._stripe.checkout_available,
        )

    async def checkout(self, request: CheckoutRequest) -> CheckoutReply:
        self._stripe.require_checkout()
        topup = topup_for(request.package, request.amount_usd)
        try:
            session_id, url = await self._stripe.create_session(request.account_id, topup)
        except Exception:
            self._metrics.requests.labels("billing", "checkout", "failed").inc()
            raise
        self._metrics.requests.labels("billing", "checkout", "created").inc()
        log.info(
            "checkout session created",
            extra={"fields": {"account_id": request.account_id, "session_id": session_id, "package": topup.package}},
        )
        return CheckoutReply(
            session_id=session_id,
            url=url,
            package=topup.package,
            credits=topup.credits,
            price_cents=topup.price_cents,
            credit_micro=topup.credit_micro,
        )

    async def stripe_webhook(self, request: StripeWebhookRequest) -> StripeWebhookReply:
        try:
            event = self._stripe.verify_event(request.payload, request.signature)
        except Exception:
            self._metrics.requests.labels("billing", "stripe_webhook", "rejected").inc()
            raise
        decision = decide(event)
        fields: dict[str, Any] = {"event_id": decision.event_id, "session_id": decision.session_id}
        if decision.grant is None:
            self._metrics.requests.labels("billing", "stripe_webhook", "ignored").inc()
            log.info("stripe event ignored", extra={"fields": {**fields, "reason": decision.reason}})
            return StripeWebhookReply(
                outcome="ignored",
                event_id=decision.event_id,
                event_type=decision.event_type,
                session_id=decision.session_id,
                reason=decision.reason,
            )
        grant = decision.grant
        applied = await self._ledger.grant(
            grant.account_id,
            grant.amount_micro,
            grant.idempotency_key,
            grant.actor,
            grant.reason,
            utcnow(),
            kind=grant.kind,
        )
        outcome = "applied" if applied else "duplicate"
        self._metrics.requests.labels("billing", "stripe_webhook", outcome).inc()
        log.info(
            "stripe top-up credited" if applied else "stripe top-up already credited",
            extra={"fields": {**fields, "account_id": grant.account_id, "amount_micro": grant.amount_micro}},
        )
        return StripeWebhookReply(
            outcome=outcome,
            event_id=decision.event_id,
            event_type=decision.event_type,
            session_id=decision.session_id,
        )
