"""Top-ups without a network: packages, custom amounts, the Checkout Session we would create, and
what a (signed) Stripe event does to the ledger."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from lexora_billing.settings import BillingSettings
from lexora_billing.stripe_checkout import StripeCheckout, checkout_session_params, decide, session_metadata
from lexora_billing.topups import PACKAGES, TopUp, custom_amount_cents, package_by_id, topup_for
from lexora_contracts.errors import (
    InternalError,
    InvalidRequest,
    PaymentProviderError,
    PaymentsNotConfigured,
    error_from_info,
)
from lexora_gateway.account.schemas import CheckoutCreate
from support.stripe_events import checkout_session_event, signature_header

SECRET = "whsec_unit_test_secret"


# ---- packages and amounts ---------------------------------------------------------------------
def test_packages_are_the_documented_ones_with_their_bonuses() -> None:
    assert [(p.id, p.credits, p.price_cents, p.bonus_credits) for p in PACKAGES] == [
        ("credits_500", 500, 500, 0),
        ("credits_2000", 2_000, 1_500, 500),
        ("credits_5000", 5_000, 3_000, 2_000),
        ("credits_15000", 15_000, 7_500, 7_500),
    ]


@pytest.mark.parametrize(
    ("package", "price_cents", "credit_micro"),
    [
        ("credits_500", 500, 5_000_000),
        ("credits_2000", 1_500, 20_000_000),
        ("credits_5000", 3_000, 50_000_000),
        ("credits_15000", 7_500, 150_000_000),
    ],
)
def test_a_package_charges_its_price_and_credits_its_credit_value(
    package: str, price_cents: int, credit_micro: int
) -> None:
    topup = topup_for(package, None)
    assert (topup.price_cents, topup.credit_micro, topup.package) == (price_cents, credit_micro, package)


def test_unknown_package_is_refused_naming_the_real_ones() -> None:
    with pytest.raises(InvalidRequest) as refused:
        package_by_id("credits_1000000")
    assert refused.value.param == "package"
    assert "credits_500" in refused.value.message and "credits_15000" in refused.value.message


@pytest.mark.parametrize(
    ("amount", "cents"),
    [("2", 200), ("2.00", 200), ("25.5", 2_550), ("25.50", 2_550), ("999.99", 99_999), ("1000", 100_000)],
)
def test_custom_amounts_within_bounds_become_whole_cents(amount: str, cents: int) -> None:
    assert custom_amount_cents(Decimal(amount)) == cents


def test_a_custom_amount_buys_one_credit_per_cent() -> None:
    topup = topup_for(None, Decimal("12.34"))
    assert (topup.package, topup.credits, topup.price_cents, topup.credit_micro) == (None, 1_234, 1_234, 12_340_000)


@pytest.mark.parametrize("amount", ["1.99", "0", "-5", "1000.01", "1e6"])
def test_custom_amounts_outside_2_to_1000_dollars_are_refused(amount: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        custom_amount_cents(Decimal(amount))
    assert refused.value.param == "amount_usd"
    assert "between $2 and $1,000" in refused.value.message


@pytest.mark.parametrize("amount", ["2.001", "10.999", "5.0000001"])
def test_custom_amounts_finer_than_a_cent_are_refused(amount: str) -> None:
    with pytest.raises(InvalidRequest, match="whole cents"):
        custom_amount_cents(Decimal(amount))


@pytest.mark.parametrize("amount", ["NaN", "Infinity"])
def test_custom_amounts_that_are_not_numbers_are_refused(amount: str) -> None:
    with pytest.raises(InvalidRequest):
        custom_amount_cents(Decimal(amount))


@pytest.mark.parametrize(("package", "amount"), [(None, None), ("credits_500", Decimal("5"))])
def test_a_top_up_is_a_package_or_an_amount_exactly(package: str | None, amount: Decimal | None) -> None:
    with pytest.raises(InvalidRequest, match="either 'package'"):
        topup_for(package, amount)


def test_checkout_body_takes_amounts_as_json_numbers_or_strings() -> None:
    assert CheckoutCreate.model_validate_json('{"amount_usd": 19.99}').amount_usd == Decimal("19.99")
    assert CheckoutCreate.model_validate_json('{"amount_usd": "19.99"}').amount_usd == Decimal("19.99")
    with pytest.raises(ValidationError):
        CheckoutCreate.model_validate_json('{"amount_usd": "NaN"}')


# ---- the Checkout Session we create -----------------------------------------------------------
def test_checkout_session_is_one_usd_line_item_at_the_price_with_our_metadata() -> None:
    topup = topup_for("credits_2000", None)
    params = checkout_session_params("acct_1", topup, "https://api.example.com/")
    assert params["mode"] == "payment"
    [item] = params["line_items"]
    assert item["quantity"] == 1
    assert item["price_data"]["currency"] == "usd"
    assert item["price_data"]["unit_amount"] == 1_500
    assert item["price_data"]["product_data"]["name"] == "2,000 Lexora credits"
    assert params["client_reference_id"] == "acct_1"
    assert params["metadata"] == {
        "lexora_account_id": "acct_1",
        "lexora_package": "credits_2000",
        "lexora_credits": "2000",
        "lexora_credit_micro": "20000000",
        "lexora_price_cents": "1500",
    }
    assert params["payment_intent_data"]["metadata"] == params["metadata"]
    # Stripe fills in {CHECKOUT_SESSION_ID} itself; the URLs hang off the configured public URL.
    assert params["success_url"] == "https://api.example.com/billing/success?session_id={CHECKOUT_SESSION_ID}"
    assert params["cancel_url"] == "https://api.example.com/billing/cancel"
    assert all(isinstance(v, str) for v in params["metadata"].values()), "Stripe metadata values are strings"


def test_custom_amount_session_is_marked_custom() -> None:
    params = checkout_session_params("acct_1", topup_for(None, Decimal("7.25")), "http://localhost:8080")
    assert params["line_items"][0]["price_data"]["unit_amount"] == 725
    assert params["metadata"]["lexora_package"] == "custom"
    assert params["metadata"]["lexora_credit_micro"] == "7250000"


def test_checkout_without_a_stripe_key_says_payments_are_not_configured() -> None:
    stripe = StripeCheckout(None, SECRET, "https://api.example.com", 5.0)
    assert not stripe.checkout_available
    with pytest.raises(PaymentsNotConfigured, match="lexora admin grant"):
        stripe.require_checkout()
    # A key without a public URL cannot send payers anywhere: also not configured.
    assert not StripeCheckout("sk_test_x", SECRET, None, 5.0).checkout_available


# ---- webhook events → grants ------------------------------------------------------------------
PACKAGE_2000 = topup_for("credits_2000", None)


def event(event_id: str = "evt_1", session_id: str = "cs_test_1", **kwargs: Any) -> dict[str, Any]:
    return json.loads(checkout_session_event(event_id, session_id, "acct_1", PACKAGE_2000, **kwargs))  # type: ignore[no-any-return]


def grant_key_of(stripe_event: dict[str, Any]) -> str:
    decision = decide(stripe_event)
    assert decision.grant is not None, decision.reason
    return decision.grant.idempotency_key


def test_paid_checkout_grants_the_credit_value_from_our_metadata() -> None:
    paid = event()
    paid["data"]["object"]["amount_total"] = 1  # what was charged is not what is credited
    decision = decide(paid)
    assert decision.grant is not None
    assert decision.grant.account_id == "acct_1"
    assert decision.grant.amount_micro == 20_000_000  # 2,000 credits, though the payer paid $15
    assert decision.grant.kind == "topup"
    assert decision.grant.actor == "stripe"
    assert decision.grant.idempotency_key == "stripe-session:cs_test_1"
    assert "cs_test_1" in decision.grant.reason and "evt_1" in decision.grant.reason


def test_one_session_grants_under_one_key_whatever_the_event() -> None:
    keys = {
        grant_key_of(event("evt_1")),
        grant_key_of(event("evt_2")),
        grant_key_of(event("evt_3", event_type="checkout.session.async_payment_succeeded")),
    }
    assert keys == {"stripe-session:cs_test_1"}


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"payment_status": "unpaid"}, "not paid"),
        ({"payment_status": "no_payment_required"}, "not paid"),
        ({"event_type": "checkout.session.expired", "payment_status": "unpaid"}, "does not credit"),
        ({"event_type": "checkout.session.async_payment_failed", "payment_status": "unpaid"}, "does not credit"),
        ({"metadata": {}}, "not a Lexora top-up"),
        ({"metadata": {"lexora_account_id": "acct_1", "lexora_credit_micro": "-5"}}, "not a Lexora top-up"),
        ({"metadata": {"lexora_account_id": "", "lexora_credit_micro": "5000"}}, "not a Lexora top-up"),
    ],
)
def test_events_that_are_not_a_paid_lexora_checkout_grant_nothing(kwargs: dict[str, Any], reason: str) -> None:
    decision = decide(event(**kwargs))
    assert decision.grant is None
    assert reason in decision.reason


def test_other_event_types_are_ignored() -> None:
    decision = decide({"id": "evt_9", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1"}}})
    assert decision.grant is None and decision.session_id is None


# ---- signatures -------------------------------------------------------------------------------
def test_a_correctly_signed_event_is_accepted() -> None:
    payload = checkout_session_event("evt_1", "cs_test_1", "acct_1", PACKAGE_2000)
    verified = StripeCheckout(None, SECRET, None, 5.0).verify_event(payload, signature_header(payload, SECRET))
    assert verified["id"] == "evt_1"
    assert decide(verified).grant is not None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda payload, header: (payload.replace("20000000", "99900000"), header),  # altered body
        lambda payload, header: (payload, signature_header(payload, "whsec_someone_else")),  # wrong secret
        lambda payload, header: (payload, signature_header(payload, SECRET, int(time.time()) - 3600)),  # replayed
        lambda payload, header: (payload, None),  # unsigned
        lambda payload, header: (payload, "garbage"),
    ],
)
def test_events_with_a_bad_signature_are_refused(tamper: Callable[[str, str], tuple[str, str | None]]) -> None:
    payload = checkout_session_event("evt_1", "cs_test_1", "acct_1", PACKAGE_2000)
    body, header = tamper(payload, signature_header(payload, SECRET))
    with pytest.raises(InvalidRequest, match="Stripe signature"):
        StripeCheckout(None, SECRET, None, 5.0).verify_event(body, header)


def test_webhooks_without_a_secret_say_they_are_not_configured() -> None:
    payload = checkout_session_event("evt_1", "cs_test_1", "acct_1", PACKAGE_2000)
    with pytest.raises(PaymentsNotConfigured):
        StripeCheckout(None, None, None, 5.0).verify_event(payload, signature_header(payload, SECRET))


# ---- contracts and settings -------------------------------------------------------------------
def test_top_up_errors_cross_nats_as_themselves() -> None:
    rebuilt = error_from_info(PaymentProviderError("Stripe is down").info())
    assert isinstance(rebuilt, PaymentProviderError) and rebuilt.status == 502
    assert isinstance(error_from_info(PaymentsNotConfigured("no").info()), PaymentsNotConfigured)
    assert isinstance(error_from_info(InvalidRequest("bad", param="package").info()), InvalidRequest)
    assert isinstance(error_from_info(InternalError("boom").info()), InternalError)


def test_empty_stripe_settings_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEXORA_STRIPE_SECRET_KEY", "")
    monkeypatch.setenv("LEXORA_STRIPE_WEBHOOK_SECRET", "whsec_x")
    settings = BillingSettings()
    assert settings.stripe_secret_key is None
    assert settings.stripe_webhook_secret is not None
    assert "whsec_x" not in repr(settings), "secrets never show in logs or reprs"


def test_metadata_is_what_the_session_carries() -> None:
    topup = TopUp(package=None, credits=200, price_cents=200)
    assert session_metadata("acct_9", topup)["lexora_credit_micro"] == str(200 * 10_000)
