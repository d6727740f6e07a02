"""Top-ups through Stripe on the running stack: signed webhook deliveries (as Stripe makes them, re-
deliveries included) credit each paid Checkout Session exactly once; forged ones credit nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import openai

from lexora_billing.topups import topup_for
from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack
from support.stripe_events import STRIPE_TEST_ENV, checkout_session_event, signature_header

WEBHOOK_SECRET = STRIPE_TEST_ENV["LEXORA_STRIPE_WEBHOOK_SECRET"]
PACKAGE_2000 = topup_for("credits_2000", None)  # $15 for 2,000 credits = $20 of balance


def new_ids() -> tuple[str, str]:
    suffix = uuid.uuid4().hex
    return f"evt_test_{suffix}", f"cs_test_{suffix}"


def deliver(lexora: RunningStack, payload: str, signature: str | None = None) -> httpx.Response:
    """POST a webhook body to the gateway as Stripe does (signed now, with the endpoint's secret)."""
    headers = {"Content-Type": "application/json; charset=utf-8"}
    signature = signature_header(payload, WEBHOOK_SECRET) if signature is None else signature
    if signature:
        headers["Stripe-Signature"] = signature
    return httpx.post(
        f"{lexora.base_url}/billing/stripe/webhook", content=payload.encode(), headers=headers, timeout=30
    )


def deliver_concurrently(lexora: RunningStack, payload: str, times: int) -> list[httpx.Response]:
    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{lexora.base_url}/billing/stripe/webhook",
                        content=payload.encode(),
                        headers={"Stripe-Signature": signature_header(payload, WEBHOOK_SECRET)},
                    )
                    for _ in range(times)
                )
            )

    return asyncio.run(all_at_once())


def ledger(lexora: RunningStack, account_id: str) -> list[dict[str, Any]]:
    return lexora.query("SELECT * FROM ledger_entries WHERE account_id = :a ORDER BY id", a=account_id)


def assert_books_balance(lexora: RunningStack, account_id: str) -> int:
    """The stored balance is the sum of the account's ledger entries, and never negative."""
    [row] = lexora.query(
        "SELECT b.balance_micro, (SELECT COALESCE(SUM(e.amount_micro), 0) FROM ledger_entries e "
        "WHERE e.account_id = b.account_id) AS ledger_sum FROM balances b WHERE b.account_id = :a",
        a=account_id,
    )
    assert int(row["balance_micro"]) == int(row["ledger_sum"])
    assert int(row["balance_micro"]) >= 0
    return int(row["balance_micro"])


def test_paid_checkout_credits_the_package_credit_value(lexora: RunningStack) -> None:
    account = lexora.create_account(credits_micro=0)
    event_id, session_id = new_ids()
    response = deliver(lexora, checkout_session_event(event_id, session_id, account.account_id, PACKAGE_2000))
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "applied"
    assert response.json()["session_id"] == session_id

    assert lexora.balance(account.account_id).balance_micro == 20_000_000  # 2,000 credits, paid $15
    [entry] = ledger(lexora, account.account_id)
    assert entry["kind"] == "topup"
    assert entry["actor"] == "stripe"
    assert entry["amount_micro"] == 20_000_000
    assert entry["idempotency_key"] == f"grant:stripe-session:{session_id}"
    assert assert_books_balance(lexora, account.account_id) == 20_000_000


def test_the_same_event_delivered_five_times_at_once_credits_once(lexora: RunningStack) -> None:
    account = lexora.create_account(credits_micro=0)
    event_id, session_id = new_ids()
    payload = checkout_session_event(event_id, session_id, account.account_id, PACKAGE_2000)
    responses = deliver_concurrently(lexora, payload, 5)
    assert [r.status_code for r in responses] == [200] * 5, [r.text for r in responses]
    assert sorted(r.json()["outcome"] for r in responses) == ["applied"] + ["duplicate"] * 4

    # ...and again later, one at a time, as Stripe's retry schedule would.
    for _ in range(2):
        assert deliver(lexora, payload).json()["outcome"] == "duplicate"
    assert len(ledger(lexora, account.account_id)) == 1
    assert assert_books_balance(lexora, account.account_id) == 20_000_000


def test_a_different_event_for_the_same_session_credits_once(lexora: RunningStack) -> None:
    account = lexora.create_account(credits_micro=0)
    first_event, session_id = new_ids()
    second_event, _ = new_ids()
    topup = topup_for("credits_5000", None)
    first = deliver(lexora, checkout_session_event(first_event, session_id, account.account_id, topup))
    assert first.json()["outcome"] == "applied"
    again = deliver(lexora, checkout_session_event(second_event, session_id, account.account_id, topup))
    assert again.status_code == 200
    assert again.json()["outcome"] == "duplicate"
    late = deliver(
        lexora,
        checkout_session_event(
            f"{second_event}_async",
            session_id,
            account.account_id,
            topup,
            event_type="checkout.session.async_payment_succeeded",
        ),
    )
    assert late.json()["outcome"] == "duplicate"
    assert len(ledger(lexora, account.account_id)) == 1
    assert assert_books_balance(lexora, account.account_id) == 50_000_000


def test_a_bad_signature_is_refused_with_400_and_credits_nothing(lexora: RunningStack) -> None:
    account = lexora.create_account(credits_micro=0)
    event_id, session_id = new_ids()
    payload = checkout_session_event(event_id, session_id, account.account_id, PACKAGE_2000)
    forged = [
        (payload, signature_header(payload, "whsec_not_the_endpoint_secret")),
        (payload.replace('"lexora_credit_micro": "20000000"', '"lexora_credit_micro": "900000000"'), None),
        (payload, signature_header(payload, WEBHOOK_SECRET, int(time.time()) - 3600)),  # an old delivery replayed
        (payload, ""),  # no Stripe-Signature header at all
    ]
    for body, signature in forged:
        if signature is None:  # signed, then altered in transit
            signature = signature_header(payload, WEBHOOK_SECRET)
        response = deliver(lexora, body, signature)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert "Stripe signature" in error["message"]
    assert ledger(lexora, account.account_id) == []
    assert lexora.balance(account.account_id).balance_micro == 0


def test_an_unpaid_session_is_acknowledged_but_credits_nothing_until_paid(lexora: RunningStack) -> None:
    account = lexora.create_account(credits_micro=0)
    event_id, session_id = new_ids()
    unpaid = checkout_session_event(event_id, session_id, account.account_id, PACKAGE_2000, payment_status="unpaid")
    response = deliver(lexora, unpaid)
    assert response.status_code == 200  # acknowledged, so Stripe stops re-delivering it
    assert response.json()["outcome"] == "ignored"
    assert ledger(lexora, account.account_id) == []

    # A delayed payment method (bank debit) settles later with its own event: that one credits.
    paid_event, _ = new_ids()
    paid = checkout_session_event(
        paid_event, session_id, account.account_id, PACKAGE_2000, event_type="checkout.session.async_payment_succeeded"
    )
    assert deliver(lexora, paid).json()["outcome"] == "applied"
    assert assert_books_balance(lexora, account.account_id) == 20_000_000


def test_top_up_then_usage_then_redelivery_keeps_the_books_exact(lexora: RunningStack) -> None:
    account = lexora.create_account(credits_micro=0)
    event_id, session_id = new_ids()
    payload = checkout_session_event(event_id, session_id, account.account_id, topup_for("credits_500", None))
    assert deliver(lexora, payload).json()["outcome"] == "applied"

    client = openai.OpenAI(base_url=lexora.base_url, api_key=account.api_key, max_retries=0, timeout=120)
    client.chat.completions.create(model=LOCAL_CHAT_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
    balance = lexora.settled_balance(account.account_id)
    assert balance.held_micro == 0
    assert deliver(lexora, payload).json()["outcome"] == "duplicate"

    kinds = sorted(e["kind"] for e in ledger(lexora, account.account_id))
    assert kinds.count("topup") == 1
    assert assert_books_balance(lexora, account.account_id) == lexora.balance(account.account_id).balance_micro
    assert lexora.balance(account.account_id).balance_micro <= 5_000_000


def test_packages_are_listed_with_prices_and_bonuses(lexora: RunningStack) -> None:
    for base in (lexora.base_url, lexora.base_url.replace("/v1", "/api/v1")):
        listing = httpx.get(f"{base}/billing/packages", timeout=10).json()
        assert [(p["id"], p["credits"], p["price_usd"], p["bonus_credits"]) for p in listing["data"]] == [
            ("credits_500", 500, "5.00", 0),
            ("credits_2000", 2_000, "15.00", 500),
            ("credits_5000", 5_000, "30.00", 2_000),
            ("credits_15000", 15_000, "75.00", 7_500),
        ]
        assert listing["custom_amount"] == {"min_usd": "2.00", "max_usd": "1000.00", "credits_per_usd": 100}
        assert listing["checkout_available"] is True


def test_checkout_answers_a_clear_error_when_stripe_cannot_be_reached(lexora: RunningStack) -> None:
    account = lexora.create_account(credits_micro=0)
    headers = {"Authorization": f"Bearer {account.api_key}"}
    started = time.monotonic()
    response = httpx.post(
        f"{lexora.base_url}/billing/checkout", json={"package": "credits_2000"}, headers=headers, timeout=60
    )
    assert time.monotonic() - started < 35, "the gateway answers, it does not hang"
    # The test key reaches no Stripe from here (no network; with one, Stripe refuses the fake key).
    assert response.status_code == 502, response.text
    assert response.json() == {
        "error": {
            "message": response.json()["error"]["message"],
            "type": "payment_provider_error",
            "param": None,
            "code": "payment_provider_error",
        }
    }
    assert "payment provider" in response.json()["error"]["message"]
    assert "Traceback" not in response.text
    assert ledger(lexora, account.account_id) == []


def test_checkout_refuses_bad_amounts_and_anonymous_callers(lexora: RunningStack) -> None:
    account = lexora.create_account(credits_micro=0)
    url = f"{lexora.base_url}/billing/checkout"
    headers = {"Authorization": f"Bearer {account.api_key}"}
    for body, param in [
        ({"amount_usd": 1.5}, "amount_usd"),
        ({"amount_usd": "1000.01"}, "amount_usd"),
        ({"amount_usd": 5.005}, "amount_usd"),
        ({"package": "credits_1"}, "package"),
    ]:
        response = httpx.post(url, json=body, headers=headers, timeout=30)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
    both = httpx.post(url, json={"package": "credits_500", "amount_usd": 5}, headers=headers, timeout=30)
    assert both.status_code == 400
    anonymous = httpx.post(url, json={"package": "credits_500"}, timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"


def test_several_paid_sessions_at_once_for_a_new_account_all_credit(lexora: RunningStack) -> None:
    # A new account has no balance row yet: concurrent first grants race to create it. Stripe
    # retries any delivery that did not get a 2xx, so deliver the way it does until each is taken.
    account = lexora.create_account(credits_micro=0)
    payloads = [
        checkout_session_event(*new_ids(), account.account_id, topup_for(package, None))
        for package in ("credits_500", "credits_2000", "credits_5000", "credits_15000")
    ]

    async def deliver_all() -> list[str]:
        async with httpx.AsyncClient(timeout=30) as client:

            async def until_acknowledged(payload: str) -> str:
                for _ in range(5):
                    response = await client.post(
                        f"{lexora.base_url}/billing/stripe/webhook",
                        content=payload.encode(),
                        headers={"Stripe-Signature": signature_header(payload, WEBHOOK_SECRET)},
                    )
                    if response.status_code == 200:
                        return str(response.json()["outcome"])
                    await asyncio.sleep(0.2)
                raise AssertionError(f"never acknowledged: {response.status_code} {response.text}")

            return await asyncio.gather(*(until_acknowledged(p) for p in payloads))

    assert asyncio.run(deliver_all()) == ["applied"] * 4
    assert len(ledger(lexora, account.account_id)) == 4
    assert assert_books_balance(lexora, account.account_id) == (500 + 2_000 + 5_000 + 15_000) * 10_000
