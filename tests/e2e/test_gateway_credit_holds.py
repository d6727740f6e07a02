"""A billing client given billing's Postgres database (the gateway's) places credit holds itself, with
billing's own statement: the same rows and the same 402s as a hold placed by billing, settled by billing.

Driven directly on a fresh database (no NATS: the direct path never uses it). The whole stack
runs every request through this path (tests/e2e)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from lexora_billing.client import BillingClient
from lexora_billing.ledger import Ledger
from lexora_contracts.errors import InsufficientCredits, InternalError, ServiceUnavailable
from lexora_contracts.messages import Identity, UsageEvent
from lexora_contracts.money import PICO_PER_MICRO
from lexora_db.engine import migrate
from support.postgres import fresh_database
from support.usage_events import usage_event

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TTL_S = 180.0


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """A new database at the latest migration."""
    url = fresh_database(postgres_url, "h")
    migrate(url)
    return url


@pytest.fixture
async def holds(database_url: str) -> AsyncIterator[BillingClient]:
    holds = await BillingClient.open(None, database_url, pool_size=2)  # type: ignore[arg-type]
    assert holds.holds_directly
    try:
        yield holds
    finally:
        await holds.close()


async def _account(ledger: Ledger, credit_micro: int) -> str:
    account_id = f"acct_{uuid.uuid4().hex[:20]}"
    await ledger.grant(account_id, credit_micro, f"test:{account_id}", "tests", "test credit", NOW)
    return account_id


def _identity(account_id: str, spend_limit_micro: int | None = None) -> Identity:
    return Identity(account_id=account_id, key_id="key_holds", plan="pro", spend_limit_micro=spend_limit_micro)


async def _rows(ledger: Ledger, sql: str, **params: object) -> list[dict]:
    async with ledger._engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(text(sql), params)).mappings().all()]


async def test_a_hold_placed_by_the_gateway_is_billings_hold_and_billing_settles_it(
    ledger: Ledger, holds: BillingClient
) -> None:
    account = await _account(ledger, 1_000)
    await holds.hold(_identity(account), "req_direct", 400, TTL_S)
    assert (await ledger.balance(account)).held_micro == 400
    (reservation,) = await _rows(ledger, "SELECT * FROM reservations WHERE request_id = 'req_direct'")
    assert (reservation["account_id"], reservation["amount_micro"], reservation["status"]) == (account, 400, "held")

    assert await ledger.settle_batch([_completed("req_direct", account, 150, reserved_micro=400)], NOW) == [True]
    balance = await ledger.balance(account)
    assert (balance.balance_micro, balance.held_micro) == (850, 0)


def _completed(request_id: str, account_id: str, cost_micro: int, reserved_micro: int) -> UsageEvent:
    return usage_event(request_id, account_id).model_copy(
        update={"key_id": "key_holds", "cost_pico": cost_micro * PICO_PER_MICRO, "reserved_micro": reserved_micro}
    )


async def test_holds_commit_without_waiting_for_the_disk_and_a_lost_one_is_still_charged_once(
    ledger: Ledger, holds: BillingClient
) -> None:
    """The gateway's hold connections commit asynchronously (half a hold's time was the WAL flush).
    Only a Postgres crash can undo such a commit, and it undoes the whole hold: the job then settles
    without a reservation, and is charged exactly once all the same."""
    assert holds._pool is not None
    async with holds._pool.acquire() as conn:
        assert await conn.fetchval("SHOW synchronous_commit") == "off"
    account = await _account(ledger, 1_000)
    await holds.hold(_identity(account), "req_kept", 300, TTL_S)
    # A hold the crash undid: its job ran and reported, but no row of it is left.
    lost = _completed("req_lost", account, 200, reserved_micro=300)
    kept = _completed("req_kept", account, 100, reserved_micro=300)
    assert await ledger.settle_batch([lost, kept], NOW) == [True, True]
    assert await ledger.settle_batch([lost, kept], NOW) == [False, False], "each charged once"
    balance = await ledger.balance(account)
    assert (balance.balance_micro, balance.held_micro) == (700, 0)
    charges = await _rows(ledger, "SELECT idempotency_key, amount_micro FROM ledger_entries WHERE kind = 'charge'")
    assert sorted((c["idempotency_key"], c["amount_micro"]) for c in charges) == [
        ("charge:req_kept", -100),
        ("charge:req_lost", -200),
    ]


async def test_a_hold_the_balance_cannot_cover_is_refused_as_billing_refuses_it(
    ledger: Ledger, holds: BillingClient
) -> None:
    account = await _account(ledger, 1_000)
    await holds.hold(_identity(account), "req_1", 700, TTL_S)
    with pytest.raises(InsufficientCredits) as by_gateway:
        await holds.hold(_identity(account), "req_2", 700, TTL_S)
    with pytest.raises(InsufficientCredits) as by_billing:
        await ledger.reserve("req_3", account, 700, TTL_S, NOW)
    assert str(by_gateway.value) == str(by_billing.value)
    assert "$0.000300 is available" in str(by_gateway.value)
    assert (await ledger.balance(account)).held_micro == 700, "a refused hold holds nothing"


async def test_a_keys_spend_limit_is_held_against_too(ledger: Ledger, holds: BillingClient) -> None:
    account = await _account(ledger, 10_000)
    await holds.hold(_identity(account, spend_limit_micro=500), "req_1", 300, TTL_S)
    with pytest.raises(InsufficientCredits, match="spend limit"):
        await holds.hold(_identity(account, spend_limit_micro=500), "req_2", 300, TTL_S)
    await holds.hold(_identity(account), "req_3", 300, TTL_S)  # without a limit only the balance counts
    assert (await ledger.balance(account)).held_micro == 600


async def test_the_same_request_is_never_held_twice(ledger: Ledger, holds: BillingClient) -> None:
    account = await _account(ledger, 1_000)
    await holds.hold(_identity(account), "req_once", 100, TTL_S)
    with pytest.raises(InternalError):
        await holds.hold(_identity(account), "req_once", 100, TTL_S)
    assert (await ledger.balance(account)).held_micro == 100


async def test_an_unreachable_database_is_a_503_to_retry(ledger: Ledger) -> None:
    holds = await BillingClient.open(None, "postgresql+asyncpg://nobody:x@127.0.0.1:1/none", pool_size=1)  # type: ignore[arg-type]
    try:
        with pytest.raises(ServiceUnavailable, match="credit ledger") as caught:
            await holds.hold(_identity("acct_x"), "req_x", 100, TTL_S)
        assert caught.value.status == 503 and caught.value.retry_after
    finally:
        await holds.close()


async def test_without_a_database_url_holds_go_through_billing() -> None:
    for url in (None, ""):
        assert not (await BillingClient.open(None, url, pool_size=1)).holds_directly  # type: ignore[arg-type]
