"""Batch settlement and the one-statement reserve.

The ledger is driven directly (a fresh database per test) for the exact cases: many accounts and
one hot account in one batch, redelivery within a batch and across batches (a batch committed but
never acked), a batch that fails part-way, key limits under concurrency, the sweeper. Then billing
runs as a process on its own NATS server and database for what needs the consumer: a poison event
in the stream, and billing killed while it settles.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from sqlalchemy import text

from lexora_billing.ledger import Ledger
from lexora_contracts import subjects
from lexora_contracts.errors import InsufficientCredits
from lexora_contracts.messages import Balance, GrantRequest, ReserveReply, ReserveRequest, UsageEvent
from lexora_contracts.money import PICO_PER_MICRO
from lexora_db.engine import create_engine
from lexora_dev import stack
from lexora_dev.processes import ManagedProcess, free_port
from lexora_runtime.bus import call, encode, publish_usage_event

NOW = datetime(2026, 1, 1, tzinfo=UTC)
COST = 2_345_678  # pico-USD: not a whole micro, so the carry moves
HOLD = 10


# ---- databases (the database_url and ledger fixtures are in tests/e2e/conftest.py) ------------
async def _query(ledger: Ledger, sql: str, **params: object) -> list[dict]:
    async with ledger._engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(text(sql), params)).mappings().all()]


async def _accounts(ledger: Ledger, count: int, credit_micro: int = 1_000_000) -> list[str]:
    ids = [f"acct_{uuid.uuid4().hex[:20]}" for _ in range(count)]
    for account_id in ids:
        await ledger.grant(account_id, credit_micro, f"test:{account_id}", "tests", "test credit", NOW)
    return ids


def _event(request_id: str, account_id: str, cost_pico: int = COST, key_id: str = "key_test") -> UsageEvent:
    return UsageEvent(
        request_id=request_id,
        account_id=account_id,
        key_id=key_id,
        model="test/model",
        status_code=200,
        prompt_tokens=3,
        completion_tokens=5,
        cost_pico=cost_pico,
        reserved_micro=HOLD,
        received_at=0,
        latency_ms=1,
    )


async def _reserved_events(ledger: Ledger, accounts: list[str], per_account: int) -> list[UsageEvent]:
    events = []
    for n, account_id in enumerate(itertools.chain.from_iterable([accounts] * per_account)):
        request_id = f"req_{n}_{uuid.uuid4().hex[:8]}"
        await ledger.reserve(request_id, account_id, HOLD, 300, NOW)
        events.append(_event(request_id, account_id))
    return events


async def assert_consistent(ledger: Ledger, accounts: list[str]) -> None:
    """The balances row re-derives from the entries; every exact cost is deductions plus carry."""
    for account_id in accounts:
        balance = await ledger.balance(account_id)
        assert await ledger.rederive(account_id) == (balance.balance_micro, balance.held_micro)
        [row] = await _query(
            ledger,
            "SELECT COALESCE(SUM(cost_pico), 0) AS cost, COALESCE(-SUM(amount_micro), 0) AS deducted "
            "FROM ledger_entries WHERE account_id = :a AND kind = 'charge'",
            a=account_id,
        )
        assert row["cost"] == row["deducted"] * PICO_PER_MICRO + balance.carry_pico


async def _charges(ledger: Ledger) -> dict[str, int]:
    rows = await _query(
        ledger, "SELECT idempotency_key, COUNT(*) AS n FROM ledger_entries WHERE kind = 'charge' GROUP BY 1"
    )
    return {r["idempotency_key"]: r["n"] for r in rows}


# ---- the ledger ---------------------------------------------------------------------------------
async def test_one_batch_settles_many_accounts_exactly(ledger: Ledger) -> None:
    accounts = await _accounts(ledger, 40)
    events = await _reserved_events(ledger, accounts, 3)
    assert await ledger.settle_batch(events, NOW) == [True] * len(events)
    charges = await _charges(ledger)
    assert charges == {f"charge:{e.request_id}": 1 for e in events}
    for account_id in accounts:
        balance = await ledger.balance(account_id)
        assert balance.held_micro == 0
        # three charges of COST, the remainder carried
        assert (1_000_000 - balance.balance_micro) * PICO_PER_MICRO + balance.carry_pico == 3 * COST
    statuses = await _query(ledger, "SELECT status, COUNT(*) AS n FROM reservations GROUP BY 1")
    assert statuses == [{"status": "settled", "n": len(events)}]
    await assert_consistent(ledger, accounts)


async def test_a_hot_account_chains_its_carry_through_a_batch(ledger: Ledger) -> None:
    [account] = await _accounts(ledger, 1)
    events = await _reserved_events(ledger, [account], 200)
    assert all(await ledger.settle_batch(events, NOW))
    balance = await ledger.balance(account)
    assert (balance.balance_micro, balance.held_micro) == (1_000_000 - (200 * COST) // PICO_PER_MICRO, 0)
    assert balance.carry_pico == (200 * COST) % PICO_PER_MICRO
    await assert_consistent(ledger, [account])


async def test_redelivery_within_a_batch_is_applied_once(ledger: Ledger) -> None:
    accounts = await _accounts(ledger, 2)
    first, second = await _reserved_events(ledger, accounts, 1)
    replay = first.model_copy(update={"latency_ms": 99})  # the same request, delivered again
    assert await ledger.settle_batch([first, second, replay, first], NOW) == [True, True, False, False]
    assert await _charges(ledger) == {f"charge:{first.request_id}": 1, f"charge:{second.request_id}": 1}
    await assert_consistent(ledger, accounts)


async def test_redelivery_across_batches_after_a_commit_that_was_never_acked(ledger: Ledger) -> None:
    accounts = await _accounts(ledger, 5)
    events = await _reserved_events(ledger, accounts, 4)
    assert all(await ledger.settle_batch(events[:12], NOW))
    before = {a: await ledger.balance(a) for a in accounts}
    # billing died before acking: JetStream redelivers the whole batch, now with later events
    applied = await ledger.settle_batch(events, NOW)
    assert applied == [False] * 12 + [True] * 8
    assert await _charges(ledger) == {f"charge:{e.request_id}": 1 for e in events}
    again = await ledger.settle_batch(events[::-1], NOW)
    assert again == [False] * len(events)
    for account_id in accounts:
        after = await ledger.balance(account_id)
        assert after.held_micro == 0 and after.balance_micro < before[account_id].balance_micro
    await assert_consistent(ledger, accounts)


async def test_a_failing_batch_changes_nothing_and_its_other_events_settle_alone(ledger: Ledger) -> None:
    accounts = await _accounts(ledger, 3)
    events = await _reserved_events(ledger, accounts, 2)
    poisoned = events[3]
    # A state no writer produces: the release entry of a still-held reservation already exists,
    # so the batch's INSERT of it fails, and with it the whole transaction.
    async with ledger._engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO ledger_entries (account_id, kind, amount_micro, held_delta_micro, cost_pico, "
                "idempotency_key, actor, created_at) VALUES (:a, 'release', 0, 0, 0, :k, 'tests', :t)"
            ),
            {"a": poisoned.account_id, "k": f"release:{poisoned.request_id}", "t": NOW},
        )
    snapshot = await _query(ledger, "SELECT * FROM balances ORDER BY account_id")
    with pytest.raises(Exception):  # noqa: B017 - the database's own unique-violation error
        await ledger.settle_batch(events, NOW)
    assert await _query(ledger, "SELECT * FROM balances ORDER BY account_id") == snapshot
    assert await _charges(ledger) == {}
    # what billing does next: each event on its own; the poisoned one is refused, the rest apply
    results = [await ledger.settle(e, NOW) for e in events if e is not poisoned]
    assert results == [True] * (len(events) - 1)
    assert set(await _charges(ledger)) == {f"charge:{e.request_id}" for e in events if e is not poisoned}


async def test_events_without_reservation_or_cost_and_released_holds(ledger: Ledger) -> None:
    accounts = await _accounts(ledger, 2)
    held, released = await _reserved_events(ledger, accounts, 1)
    # the sweeper released this hold (its request outlived the TTL) before the event came
    assert await ledger.release_expired(NOW + timedelta(seconds=301)) == 2
    refused = _event("req_refused", accounts[0], cost_pico=0)  # a 402: never reserved, never charged
    applied = await ledger.settle_batch([held, refused, released.model_copy(update={"cost_pico": 0})], NOW)
    assert applied == [True, True, True]
    assert set(await _charges(ledger)) == {f"charge:{held.request_id}"}
    entries = await _query(ledger, "SELECT kind, COUNT(*) AS n FROM ledger_entries GROUP BY 1 ORDER BY 1")
    assert {e["kind"]: e["n"] for e in entries} == {"adjustment": 2, "charge": 1, "hold": 2, "release": 2}
    await assert_consistent(ledger, accounts)


async def test_key_spend_is_held_and_settled_in_the_same_statements(ledger: Ledger) -> None:
    [account] = await _accounts(ledger, 1)
    limit = 5 * HOLD
    ids = [f"req_k{i}" for i in range(8)]
    results = await asyncio.gather(
        *(ledger.reserve(r, account, HOLD, 300, NOW, key_id="key_lim", key_limit_micro=limit) for r in ids),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(refused) == 3 and all(isinstance(r, InsufficientCredits) for r in refused)
    assert all("spend limit" in str(r) for r in refused)
    assert await ledger.key_spend("key_lim") == (0, limit)
    reserved = [r for r, res in zip(ids, results, strict=True) if not isinstance(res, Exception)]
    assert await ledger.settle_batch([_event(r, account, key_id="key_lim") for r in reserved], NOW) == [True] * 5
    spent, held = await ledger.key_spend("key_lim")
    assert held == 0 and spent == sum(-c["amount_micro"] for c in await _query(ledger, _CHARGES_SQL))
    balance = await ledger.balance(account)
    assert balance.held_micro == 0
    await assert_consistent(ledger, [account])


_CHARGES_SQL = "SELECT amount_micro FROM ledger_entries WHERE kind = 'charge'"


async def test_reserve_refusals_and_a_repeated_request_id_hold_nothing(ledger: Ledger) -> None:
    [account] = await _accounts(ledger, 1, credit_micro=25)
    assert await ledger.reserve("req_a", account, 20, 300, NOW) == 5
    with pytest.raises(InsufficientCredits, match=r"\$0.000005 is available"):
        await ledger.reserve("req_b", account, 20, 300, NOW)
    with pytest.raises(Exception):  # noqa: B017 - a request id holds once
        await ledger.reserve("req_a", account, 1, 300, NOW)
    with pytest.raises(InsufficientCredits, match="Insufficient balance"):
        await ledger.reserve("req_c", "acct_unknown", 1, 300, NOW)
    balance = await ledger.balance(account)
    assert balance.held_micro == 20
    holds = await _query(ledger, "SELECT idempotency_key FROM ledger_entries WHERE kind = 'hold'")
    assert holds == [{"idempotency_key": "hold:req_a"}]
    assert len(await _query(ledger, "SELECT request_id FROM reservations")) == 1
    # a key over its limit is refused even though the account could pay; nothing is held for it
    with pytest.raises(InsufficientCredits, match="spend limit"):
        await ledger.reserve("req_d", account, 5, 300, NOW, key_id="key_x", key_limit_micro=4)
    assert await ledger.key_spend("key_x") == (0, 0)
    await assert_consistent(ledger, [account])


async def test_concurrent_reserves_on_one_account_never_overdraw(ledger: Ledger) -> None:
    [account] = await _accounts(ledger, 1, credit_micro=100)
    results = await asyncio.gather(
        *(ledger.reserve(f"req_{i}", account, 7, 300, NOW) for i in range(30)), return_exceptions=True
    )
    held = [r for r in results if not isinstance(r, Exception)]
    assert len(held) == 100 // 7
    assert all(isinstance(r, InsufficientCredits) for r in results if isinstance(r, Exception))
    assert (await ledger.balance(account)).held_micro == 7 * len(held)
    await assert_consistent(ledger, [account])


# ---- billing as a process -----------------------------------------------------------------------
class Billing:
    """nats-server and billing alone, on their own database."""

    def __init__(self, root: Path, database_url: str):
        port = free_port()
        self.nats = stack.start_nats(root, port)
        self.nats_url = f"nats://127.0.0.1:{port}"
        self.root = root
        self.database_url = database_url
        self.process: ManagedProcess | None = None
        self.generation = 0

    def start(self, **env: str) -> None:
        self.generation += 1
        config = stack.ServiceConfig(
            nats_url=self.nats_url, database_url=self.database_url, state_dir=self.root, gateway_port=0, extra_env=env
        )
        self.process = stack.start_service("billing", config, f"billing-{self.generation}")
        assert self.process is not None
        stack.wait_for_service(self.nats_url, subjects.BILLING_HEALTH, self.process, timeout=30)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None and self.process.proc is not None
        self.process.proc.send_signal(sig)
        self.process.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        self.nats.stop()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted((self.root / "logs").glob("billing-*.log")))

    def query(self, sql: str, **params: object) -> list[dict]:
        async def run() -> list[dict]:
            engine = create_engine(self.database_url)
            try:
                async with engine.connect() as conn:
                    return [dict(r) for r in (await conn.execute(text(sql), params)).mappings().all()]
            finally:
                await engine.dispose()

        return asyncio.run(run())

    def wait_settled(self, prefix: str, count: int, timeout: float, kill_after_first: bool = False) -> int:
        """How many of the prefix's reservations are settled once `count` are (or time is up).
        kill_after_first: SIGKILL billing as soon as any is, and return at once."""

        async def poll() -> int:
            engine = create_engine(self.database_url)
            sql = text("SELECT COUNT(*) FROM reservations WHERE request_id LIKE :p AND status = 'settled'")
            try:
                deadline = time.monotonic() + timeout
                while True:
                    async with engine.connect() as conn:
                        settled = (await conn.execute(sql, {"p": prefix + "%"})).scalar_one()
                    if kill_after_first and settled:
                        self.signal(signal.SIGKILL)
                        return settled
                    if settled >= count or time.monotonic() > deadline:
                        return settled
                    await asyncio.sleep(0.01 if kill_after_first else 0.2)
            finally:
                await engine.dispose()

        return asyncio.run(poll())

    def assert_exactly_once(self, prefix: str, count: int, accounts: list[str]) -> None:
        [row] = self.query(
            "SELECT COUNT(*) AS n FROM reservations r WHERE r.request_id LIKE :p AND r.status = 'settled' AND "
            "(SELECT COUNT(*) FROM ledger_entries l WHERE l.idempotency_key = 'charge:' || r.request_id) = 1",
            p=prefix + "%",
        )
        assert row["n"] == count
        for account_id in accounts:
            [b] = self.query(
                "SELECT balance_micro, held_micro, carry_pico FROM balances WHERE account_id = :a", a=account_id
            )
            [s] = self.query(
                "SELECT COALESCE(SUM(amount_micro), 0) AS balance, COALESCE(SUM(held_delta_micro), 0) AS held, "
                "COALESCE(SUM(cost_pico), 0) AS cost, "
                "COALESCE(SUM(CASE WHEN kind = 'charge' THEN -amount_micro END), 0) AS deducted "
                "FROM ledger_entries WHERE account_id = :a",
                a=account_id,
            )
            assert (b["balance_micro"], b["held_micro"]) == (s["balance"], s["held"]) == (s["balance"], 0)
            assert s["cost"] == s["deducted"] * PICO_PER_MICRO + b["carry_pico"]


@pytest.fixture
def billing(database_url: str, tmp_path: Path) -> Iterator[Billing]:
    running = Billing(tmp_path / "billing", database_url)
    try:
        yield running
    finally:
        running.stop()


def reserve_all(billing: Billing, prefix: str, accounts: list[str], count: int) -> list[UsageEvent]:
    """Credit the accounts and reserve `count` requests round-robin over them, through billing;
    returns the usage events the router would publish for them."""

    async def run() -> list[UsageEvent]:
        nc = await nats.connect(billing.nats_url)
        try:
            for account_id in accounts:
                grant = GrantRequest(
                    account_id=account_id, amount_micro=10**6, idempotency_key=account_id, actor="t", reason="t"
                )
                await call(nc, subjects.BILLING_CREDITS_GRANT, grant, Balance)
            limit = asyncio.Semaphore(16)

            async def one(n: int) -> UsageEvent:
                request_id, account_id = f"{prefix}{n}", accounts[n % len(accounts)]
                async with limit:
                    reserve = ReserveRequest(request_id=request_id, account_id=account_id, amount_micro=HOLD, ttl_s=600)
                    await call(nc, subjects.BILLING_CREDITS_RESERVE, reserve, ReserveReply)
                return _event(request_id, account_id)

            return list(await asyncio.gather(*(one(n) for n in range(count))))
        finally:
            await nc.drain()

    return asyncio.run(run())


def publish(billing: Billing, events: list[UsageEvent], raw: list[bytes] = ()) -> None:  # type: ignore[assignment]
    """The events to JetStream as the router publishes them; `raw` messages in the middle."""

    async def run() -> None:
        nc = await nats.connect(billing.nats_url)
        js = nc.jetstream()
        try:
            half = len(events) // 2
            for event in events[:half]:
                await publish_usage_event(js, event)
            for data in raw:
                await js.publish(
                    subjects.USAGE_REQUEST_COMPLETED, data, headers={subjects.MSG_ID_HEADER: uuid.uuid4().hex}
                )
            for event in events[half:]:
                await publish_usage_event(js, event)
        finally:
            await nc.drain()

    asyncio.run(run())


def test_a_poison_event_never_holds_back_the_others(billing: Billing) -> None:
    billing.start()
    prefix = f"poison-{uuid.uuid4().hex[:6]}-"
    accounts = [f"acct_p{i}_{uuid.uuid4().hex[:8]}" for i in range(10)]
    events = reserve_all(billing, prefix, accounts, 200)
    not_an_event = encode(_event("x", "y")).replace(b'"status_code":200', b'"status_code":"no"')
    publish(billing, events, raw=[b"{not json", not_an_event])
    assert billing.wait_settled(prefix, 200, timeout=30) == 200
    billing.assert_exactly_once(prefix, 200, accounts)

    async def consumer_state() -> tuple[int, int]:
        nc = await nats.connect(billing.nats_url)
        try:
            info = await nc.jetstream().consumer_info(subjects.USAGE_STREAM, subjects.BILLING_SETTLE_CONSUMER)
            return info.num_ack_pending, info.num_pending
        finally:
            await nc.drain()

    deadline = time.monotonic() + 10
    while asyncio.run(consumer_state()) != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert asyncio.run(consumer_state()) == (0, 0), "the poison events are terminated, not redelivered forever"
    assert billing.logs().count("usage event can never be handled") == 2


def test_exactly_once_when_billing_is_killed_mid_batch(billing: Billing) -> None:
    billing.start()
    prefix = f"kill-{uuid.uuid4().hex[:6]}-"
    accounts = [f"acct_k{i}_{uuid.uuid4().hex[:8]}" for i in range(25)]
    total = 2000
    events = reserve_all(billing, prefix, accounts, total)
    billing.signal(signal.SIGTERM)
    publish(billing, events)  # a backlog, settled in batches of 50 once billing is back
    billing.start(LEXORA_SETTLE_BATCH_SIZE="50")
    settled = billing.wait_settled(prefix, total, timeout=30, kill_after_first=True)
    assert 0 < settled < total, "billing was killed part-way through the backlog"
    billing.start()
    # events it had fetched but not acked come back after the consumer's ack wait (30 s)
    assert billing.wait_settled(prefix, total, timeout=120) == total
    billing.assert_exactly_once(prefix, total, accounts)
