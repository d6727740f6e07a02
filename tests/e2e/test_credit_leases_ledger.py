"""Credit leases in billing's ledger, on a fresh database per test: granted in one statement and
sized from the account's recent spend, refused as a reservation is, charged against by settlement
exactly once per request, shrunk and closed by their holder's returns, released by the sweeper when
they expire. After each test the balances row is what the ledger entries add up to."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from lexora_billing.leases import LeasePolicy
from lexora_billing.ledger import Ledger
from lexora_contracts.errors import InsufficientCredits
from lexora_contracts.messages import LeaseAcquireRequest, LeaseReturnRequest, UsageEvent
from lexora_contracts.money import PICO_PER_MICRO

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = LeasePolicy(cap_micro=1_000, spend_multiple=2, need_multiple=1)


async def _account(ledger: Ledger, credit_micro: int) -> str:
    account_id = f"acct_{uuid.uuid4().hex[:20]}"
    await ledger.grant(account_id, credit_micro, f"test:{account_id}", "tests", "test credit", NOW)
    return account_id


def _acquire(account: str, need: int, lease_id: str | None = None, **fields: object) -> LeaseAcquireRequest:
    return LeaseAcquireRequest(
        lease_id=lease_id or f"lease_{uuid.uuid4().hex}",
        holder=str(fields.pop("holder", "gw-a")),
        account_id=account,
        need_micro=need,
        ttl_s=float(fields.pop("ttl_s", 300.0)),
        **fields,  # type: ignore[arg-type]
    )


def _event(request_id: str, account: str, lease_id: str | None, cost_micro: int, key_id: str = "key_a") -> UsageEvent:
    return UsageEvent(
        request_id=request_id,
        account_id=account,
        key_id=key_id,
        model="test/model",
        status_code=200,
        prompt_tokens=3,
        completion_tokens=5,
        cost_pico=cost_micro * PICO_PER_MICRO,
        lease_id=lease_id,
        received_at=1_767_225_600,
        latency_ms=1,
    )


async def _lease(ledger: Ledger, lease_id: str) -> dict:
    async with ledger._engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM credit_leases WHERE id = :i"), {"i": lease_id})).mappings().one()
    return dict(row)


async def _balance(ledger: Ledger, account: str) -> tuple[int, int]:
    balance = await ledger.balance(account)
    assert await ledger.rederive(account) == (balance.balance_micro, balance.held_micro), "the ledger adds up"
    return balance.balance_micro, balance.held_micro


async def test_a_lease_is_held_in_one_statement_and_sized_from_recent_spend(ledger: Ledger) -> None:
    account = await _account(ledger, 10_000)
    first = _acquire(account, need=50)
    assert await ledger.acquire_lease(first, NOW, POLICY) == 50, "no spend yet: what the request needs"
    assert await _balance(ledger, account) == (10_000, 50)
    lease = await _lease(ledger, first.lease_id)
    assert (lease["amount_micro"], lease["held_micro"], lease["status"], lease["holder"]) == (50, 50, "active", "gw-a")

    await ledger.settle_batch([_event("r1", account, first.lease_id, 300)], NOW)  # spent 300 in the last minute
    assert await ledger.acquire_lease(_acquire(account, need=50), NOW, POLICY) == 600, "2x the last minute's spend"
    await ledger.settle_batch([_event("r2", account, first.lease_id, 400)], NOW)
    assert await ledger.acquire_lease(_acquire(account, need=50), NOW, POLICY) == 1_000, "at most the cap"
    assert await ledger.acquire_lease(_acquire(account, need=2_000), NOW, POLICY) == 2_000, "at least the need"
    later = NOW + timedelta(minutes=2)
    assert await ledger.acquire_lease(_acquire(account, need=50), later, POLICY) == 50, "old spend does not count"
    balance, held = await _balance(ledger, account)
    # The first lease's 50 went to the 700 charged against it.
    assert (balance, held) == (10_000 - 700, 600 + 1_000 + 2_000 + 50)
    assert await ledger.acquire_lease(_acquire(account, need=10), NOW, POLICY) == 1_000
    # What is left is less than the policy would grant: the lease takes all of it, never more.
    left = balance - held - 1_000
    generous = LeasePolicy(cap_micro=10**9, spend_multiple=100)
    assert await ledger.acquire_lease(_acquire(account, need=10), NOW, generous) == left
    assert await _balance(ledger, account) == (balance, balance)


async def test_an_account_without_spend_history_leases_room_for_several_requests(ledger: Ledger) -> None:
    policy = LeasePolicy(cap_micro=1_000, spend_multiple=2, need_multiple=10)
    account = await _account(ledger, 10_000)
    assert await ledger.acquire_lease(_acquire(account, need=50), NOW, policy) == 500, "10x the need"
    assert await ledger.acquire_lease(_acquire(account, need=200), NOW, policy) == 1_000, "at most the cap"
    assert await ledger.acquire_lease(_acquire(account, need=2_000), NOW, policy) == 2_000, "at least the need"
    small = await _account(ledger, 300)
    assert await ledger.acquire_lease(_acquire(small, need=50), NOW, policy) == 300, "at most what is available"
    assert await _balance(ledger, small) == (300, 300)


async def test_a_lease_the_balance_cannot_cover_is_refused_like_a_reservation(ledger: Ledger) -> None:
    account = await _account(ledger, 1_000)
    await ledger.acquire_lease(_acquire(account, need=700), NOW, POLICY)
    with pytest.raises(InsufficientCredits) as by_lease:
        await ledger.acquire_lease(_acquire(account, need=301), NOW, POLICY)
    with pytest.raises(InsufficientCredits) as by_reservation:
        await ledger.reserve("req_x", account, 301, 60, NOW)
    assert str(by_lease.value) == str(by_reservation.value)
    assert "$0.000300 is available" in str(by_lease.value)
    assert await _balance(ledger, account) == (1_000, 700), "a refusal holds nothing"
    assert await ledger.acquire_lease(_acquire(account, need=300), NOW, POLICY) == 300, "the last cent can be leased"
    assert await _balance(ledger, account) == (1_000, 1_000)


async def test_concurrent_acquisitions_never_lease_more_than_the_balance(ledger: Ledger) -> None:
    account = await _account(ledger, 1_000)
    results = await asyncio.gather(
        *(ledger.acquire_lease(_acquire(account, need=70), NOW, POLICY) for _ in range(30)), return_exceptions=True
    )
    granted = [r for r in results if isinstance(r, int)]
    assert all(isinstance(r, InsufficientCredits) for r in results if not isinstance(r, int))
    assert len(granted) == 1_000 // 70 and sum(granted) == 70 * len(granted)
    assert await _balance(ledger, account) == (1_000, 70 * len(granted))


async def test_settlement_charges_against_the_lease_once_per_request(ledger: Ledger) -> None:
    account = await _account(ledger, 1_000)
    lease = _acquire(account, need=500)
    await ledger.acquire_lease(lease, NOW, POLICY)
    events = [_event("a", account, lease.lease_id, 120), _event("b", account, lease.lease_id, 0)]
    assert await ledger.settle_batch([*events, events[0]], NOW) == [True, True, False]
    assert await ledger.settle_batch(events, NOW) == [False, False], "redelivered: nothing twice"
    assert await _balance(ledger, account) == (880, 380)
    row = await _lease(ledger, lease.lease_id)
    assert (row["held_micro"], row["settled_micro"], row["settled_requests"]) == (380, 120, 2)
    # A request that cost more than the lease still holds (never expected: each is covered by its
    # worst case) is charged in full; only what the lease holds is released.
    assert await ledger.settle_batch([_event("c", account, lease.lease_id, 400)], NOW) == [True]
    assert await _balance(ledger, account) == (480, 0)


async def test_returns_shrink_a_lease_and_a_final_one_closes_it_when_its_requests_are_settled(
    ledger: Ledger,
) -> None:
    account = await _account(ledger, 1_000)
    lease = _acquire(account, need=600)
    await ledger.acquire_lease(lease, NOW, POLICY)
    # Three requests covered: one finished costing 100, two still in flight with worst case 150.
    shrink = LeaseReturnRequest(lease_id=lease.lease_id, keep_micro=400)
    assert await ledger.return_lease(shrink, NOW) == 200
    assert await ledger.return_lease(shrink, NOW) == 0, "a repeated return changes nothing"
    assert await _balance(ledger, account) == (1_000, 400)
    await ledger.settle_batch([_event("one", account, lease.lease_id, 100)], NOW)
    final = LeaseReturnRequest(lease_id=lease.lease_id, keep_micro=400, requests=3, final=True)
    assert await ledger.return_lease(final, NOW) == 0, "what may still be charged stays held"
    assert (await _lease(ledger, lease.lease_id))["status"] == "returned"
    await ledger.settle_batch([_event("two", account, lease.lease_id, 90)], NOW)
    assert await _balance(ledger, account) == (810, 210)
    await ledger.settle_batch([_event("three", account, lease.lease_id, 10)], NOW)
    row = await _lease(ledger, lease.lease_id)
    assert (row["status"], row["held_micro"], row["settled_micro"]) == ("closed", 0, 200)
    assert await _balance(ledger, account) == (800, 0), "the last event released what the lease still held"
    assert await ledger.return_lease(final, NOW) == 0, "a closed lease releases nothing again"


async def test_a_final_return_after_every_request_settled_closes_at_once(ledger: Ledger) -> None:
    account = await _account(ledger, 1_000)
    lease = _acquire(account, need=300)
    await ledger.acquire_lease(lease, NOW, POLICY)
    await ledger.settle_batch([_event("x", account, lease.lease_id, 30)], NOW)
    final = LeaseReturnRequest(lease_id=lease.lease_id, keep_micro=31, requests=1, final=True)
    assert await ledger.return_lease(final, NOW) == 270
    assert (await _lease(ledger, lease.lease_id))["status"] == "closed"
    assert await _balance(ledger, account) == (970, 0)


async def test_a_replaced_lease_is_shrunk_even_when_its_replacement_is_refused(ledger: Ledger) -> None:
    account = await _account(ledger, 1_000)
    old = _acquire(account, need=800)
    await ledger.acquire_lease(old, NOW, POLICY)
    replaces = LeaseReturnRequest(lease_id=old.lease_id, keep_micro=100, requests=1, final=True)
    with pytest.raises(InsufficientCredits):
        await ledger.acquire_lease(_acquire(account, need=950, replaces=replaces), NOW, POLICY)
    assert await _balance(ledger, account) == (1_000, 100), "the old lease's free part was given back"
    new = _acquire(account, need=900, replaces=replaces)
    assert await ledger.acquire_lease(new, NOW, POLICY) == 900
    assert await _balance(ledger, account) == (1_000, 1_000)


async def test_the_sweeper_releases_expired_leases_and_late_events_still_charge_once(ledger: Ledger) -> None:
    account = await _account(ledger, 1_000)
    lease = _acquire(account, need=400, ttl_s=10)
    await ledger.acquire_lease(lease, NOW, POLICY)
    await ledger.settle_batch([_event("early", account, lease.lease_id, 50)], NOW)
    assert await ledger.expire_leases(NOW + timedelta(seconds=5)) == 0
    assert await ledger.oldest_overdue_hold_s(NOW + timedelta(seconds=13)) == 3.0, "an alert would see it"
    assert await ledger.expire_leases(NOW + timedelta(seconds=11)) == 1
    assert await ledger.oldest_overdue_hold_s(NOW + timedelta(seconds=13)) == 0.0
    assert (await _lease(ledger, lease.lease_id))["status"] == "expired"
    assert await _balance(ledger, account) == (950, 0)
    assert await ledger.settle_batch([_event("late", account, lease.lease_id, 70)], NOW) == [True]
    assert await ledger.settle_batch([_event("late", account, lease.lease_id, 70)], NOW) == [False]
    assert await _balance(ledger, account) == (880, 0), "charged once, and nothing released twice"


async def test_a_keys_spend_limit_bounds_its_leases_and_settles_with_them(ledger: Ledger) -> None:
    account = await _account(ledger, 10_000)
    limited = {"key_id": "key_lim", "key_spend_limit_micro": 500}
    lease = _acquire(account, need=100, **limited)
    exact = LeasePolicy(cap_micro=10**6, spend_multiple=0, need_multiple=1)
    assert await ledger.acquire_lease(lease, NOW, exact) == 100
    assert await ledger.key_spend("key_lim") == (0, 100)
    with pytest.raises(InsufficientCredits, match="spend limit"):
        await ledger.acquire_lease(_acquire(account, need=401, **limited), NOW, POLICY)
    assert await ledger.acquire_lease(_acquire(account, need=400, **limited), NOW, POLICY) == 400
    assert await ledger.key_spend("key_lim") == (0, 500)
    await ledger.settle_batch([_event("k1", account, lease.lease_id, 60, key_id="key_lim")], NOW)
    assert await ledger.key_spend("key_lim") == (60, 440)
    final = LeaseReturnRequest(lease_id=lease.lease_id, keep_micro=60, requests=1, final=True)
    assert await ledger.return_lease(final, NOW) == 40
    assert await ledger.key_spend("key_lim") == (60, 400)
    assert await _balance(ledger, account) == (9_940, 400)


async def test_events_without_a_lease_keep_the_reservation_path(ledger: Ledger) -> None:
    account = await _account(ledger, 1_000)
    await ledger.reserve("res", account, 200, 60, NOW)
    lease = _acquire(account, need=300)
    await ledger.acquire_lease(lease, NOW, POLICY)
    mixed = [_event("res", account, None, 150), _event("leased", account, lease.lease_id, 100)]
    assert await ledger.settle_batch(mixed, NOW) == [True, True]
    assert await _balance(ledger, account) == (750, 200)
