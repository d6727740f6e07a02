"""Stripe webhook deliveries as Stripe makes them: event JSON and the `Stripe-Signature` header."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from lexora_billing.stripe_checkout import session_metadata
from lexora_billing.topups import TopUp

# Test-mode Stripe settings the fixtures give billing: webhooks are verified with this secret; the
# key reaches no Stripe from the test machines (checkout then answers 502, which the tests expect).
STRIPE_TEST_ENV = {
    "LEXORA_STRIPE_WEBHOOK_SECRET": "whsec_lexora_tests_0123456789abcdef",
    "LEXORA_STRIPE_SECRET_KEY": "sk_test_lexora_tests_not_a_real_key",
    "LEXORA_PUBLIC_URL": "http://127.0.0.1:8080",
}


def signature_header(payload: str, secret: str, timestamp: int | None = None) -> str:
    """`t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<payload>" keyed with the endpoint secret>`."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def checkout_session_event(
    event_id: str,
    session_id: str,
    account_id: str,
    topup: TopUp,
    *,
    event_type: str = "checkout.session.completed",
    payment_status: str = "paid",
    metadata: dict[str, str] | None = None,
) -> str:
    """A Checkout Session event as Stripe sends it, carrying the metadata billing sets on sessions."""
    now = int(time.time())
    event: dict[str, Any] = {
        "id": event_id,
        "object": "event",
        "api_version": "2025-08-27.basil",
        "created": now,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {
            "object": {
                "id": session_id,
                "object": "checkout.session",
                "mode": "payment",
                "status": "complete" if payment_status == "paid" else "open",
                "payment_status": payment_status,
                "amount_subtotal": topup.price_cents,
                "amount_total": topup.price_cents,
                "currency": "usd",
                "client_reference_id": account_id,
                "metadata": session_metadata(account_id, topup) if metadata is None else metadata,
                "created": now - 60,
                "livemode": False,
            }
        },
    }
    return json.dumps(event, indent=2)  # Stripe's bodies are pretty-printed; the signature covers the text
