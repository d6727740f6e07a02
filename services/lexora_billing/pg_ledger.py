"""The ledger's hot paths on Postgres: asyncpg directly, each statement prepared once per connection.

- reserve is ONE statement (one round trip, its own transaction): the balance check and hold, the
  key's spend-limit check and hold, the `hold:<request id>` ledger entry and the reservation row
  are data-modifying CTEs of a single statement, so they all happen or none does;
- settle takes a whole batch of usage events in one transaction: BEGIN, one statement that reads
  (and locks) what the batch touches, one that writes every entry, balance, key and reservation
  (`unnest` arrays), COMMIT: four round trips, however many events.

No SQLAlchemy on these paths (no statement building, no pool pre-ping): the texts are constants,
and asyncpg keeps each one prepared on every pooled connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from lexora_billing.refusals import insufficient_balance, key_limit_exceeded
from lexora_billing.settlement import ReservationRow, SettlementPlan, charge_key, plan_settlement
from lexora_contracts.messages import UsageEvent
from lexora_runtime.db import on_pooled_connection

# Without a key limit: hold on the balance row, journal it, record the reservation.
# `snapshot_available` is read from the statement's snapshot, for the refusal message only (when
# `held` is empty nothing was written).
RESERVE = """
WITH held AS (
    UPDATE balances SET held_micro = held_micro + $3::bigint, updated_at = $4::timestamptz
    WHERE account_id = $2::text AND balance_micro - held_micro >= $3::bigint
    RETURNING balance_micro - held_micro AS available
), hold_entry AS (
    INSERT INTO ledger_entries
        (account_id, kind, amount_micro, held_delta_micro, cost_pico, idempotency_key, actor, created_at)
    SELECT $2::text, 'hold', 0, $3::bigint, 0, 'hold:' || $1::text, 'billing', $4::timestamptz
    FROM held WHERE $3::bigint > 0
), reservation AS (
    INSERT INTO reservations
        (request_id, account_id, amount_micro, key_id, status, charged_micro, created_at, expires_at)
    SELECT $1::text, $2::text, $3::bigint, NULL, 'held', 0, $4::timestamptz, $5::timestamptz FROM held
)
SELECT (SELECT available FROM held) AS available,
       (SELECT balance_micro - held_micro FROM balances WHERE account_id = $2::text) AS snapshot_available
"""

# With a key spend limit. Locks are taken in the order every other writer uses (the account's
# balance row, then the key's row), and each check reads the newest committed row:
# `account` locks the balance row (FOR UPDATE returns its latest version); `key_hold` adds the
# hold to the key's row only if the account can pay (ON CONFLICT DO UPDATE checks and locks the
# latest version of an existing row, and a first use inserts it); `held` then updates the balance
# row only if the key's hold was taken (its EXISTS makes it wait for `key_hold`). A refusal by
# either check leaves every table as it was.
RESERVE_WITH_KEY_LIMIT = """
WITH account AS (
    SELECT balance_micro - held_micro AS available FROM balances WHERE account_id = $2::text FOR UPDATE
), key_hold AS (
    INSERT INTO key_spend AS k (key_id, spent_micro, held_micro)
    SELECT $6::text, 0, $3::bigint FROM account
    WHERE account.available >= $3::bigint AND $3::bigint <= $7::bigint
    ON CONFLICT (key_id) DO UPDATE SET held_micro = k.held_micro + EXCLUDED.held_micro
    WHERE k.spent_micro + k.held_micro + EXCLUDED.held_micro <= $7::bigint
    RETURNING k.key_id
), held AS (
    UPDATE balances SET held_micro = held_micro + $3::bigint, updated_at = $4::timestamptz
    WHERE account_id = $2::text AND balance_micro - held_micro >= $3::bigint
      AND EXISTS (SELECT 1 FROM key_hold)
    RETURNING balance_micro - held_micro AS available
), hold_entry AS (
    INSERT INTO ledger_entries
        (account_id, kind, amount_micro, held_delta_micro, cost_pico, idempotency_key, actor, created_at)
    SELECT $2::text, 'hold', 0, $3::bigint, 0, 'hold:' || $1::text, 'billing', $4::timestamptz
    FROM held WHERE $3::bigint > 0
), reservation AS (
    INSERT INTO reservations
        (request_id, account_id, amount_micro, key_id, status, charged_micro, created_at, expires_at)
    SELECT $1::text, $2::text, $3::bigint, $6::text, 'held', 0, $4::timestamptz, $5::timestamptz FROM held
)
SELECT (SELECT available FROM held) AS available,
       (SELECT available FROM account) AS account_available,
       (SELECT spent_micro + held_micro FROM key_spend WHERE key_id = $6::text) AS key_used
"""

# Settlement of a batch, read in one statement: the reservations (locked), the charge entries
# that exist already, and the accounts' carries (balance rows locked). Locks are taken in a fixed
# order (reservations, then balances, each sorted; UNION ALL runs its branches in order), the
# order of the sweeper and of reserve, so concurrent writers never deadlock.
READ_FOR_SETTLEMENT = """
WITH locked_reservations AS (
    SELECT request_id, amount_micro, status, key_id FROM reservations
    WHERE request_id = ANY($1::text[]) ORDER BY request_id FOR UPDATE
), locked_balances AS (
    SELECT account_id, carry_pico FROM balances
    WHERE account_id = ANY($3::text[]) ORDER BY account_id FOR UPDATE
)
SELECT 'reservation' AS row_kind, request_id AS id, amount_micro AS amount, status, key_id FROM locked_reservations
UNION ALL
SELECT 'balance', account_id, carry_pico, NULL, NULL FROM locked_balances
UNION ALL
SELECT 'charge', idempotency_key, NULL, NULL, NULL FROM ledger_entries WHERE idempotency_key = ANY($2::text[])
"""
# A plain INSERT for the entries: an entry that exists after all (a concurrent settler that the
# locks above did not cover) fails the whole batch, which is then settled event by event.
APPLY_PLAN = """
WITH entries AS (
    INSERT INTO ledger_entries
        (account_id, kind, amount_micro, held_delta_micro, cost_pico, idempotency_key, actor, reason, created_at)
    SELECT e.account_id, e.kind, e.amount_micro, e.held_delta_micro, e.cost_pico, e.idempotency_key,
           'billing', e.reason, $17::timestamptz
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::text[])
         AS e(account_id, kind, amount_micro, held_delta_micro, cost_pico, idempotency_key, reason)
), balance_rows AS (
    UPDATE balances b
    SET balance_micro = b.balance_micro - d.deduct, held_micro = b.held_micro - d.released,
        carry_pico = d.carry, updated_at = $17::timestamptz
    FROM unnest($8::text[], $9::bigint[], $10::bigint[], $11::bigint[]) AS d(account_id, deduct, released, carry)
    WHERE b.account_id = d.account_id
), key_rows AS (
    INSERT INTO key_spend AS k (key_id, spent_micro, held_micro)
    SELECT * FROM unnest($12::text[], $13::bigint[], $14::bigint[])
    ON CONFLICT (key_id) DO UPDATE
    SET spent_micro = k.spent_micro + EXCLUDED.spent_micro, held_micro = k.held_micro + EXCLUDED.held_micro
), reservation_rows AS (
    UPDATE reservations r SET status = 'settled', charged_micro = d.charged, closed_at = $17::timestamptz
    FROM unnest($15::text[], $16::bigint[]) AS d(request_id, charged)
    WHERE r.request_id = d.request_id
)
SELECT 1
"""


class ReserveRefused(Exception):
    def __init__(self, reason: str, available_micro: int):
        super().__init__(reason)
        self.reason = reason  # "balance" | "key_limit"
        self.available_micro = available_micro


async def reserve(
    conn: asyncpg.Connection,
    request_id: str,
    account_id: str,
    amount_micro: int,
    ttl_s: float,
    now: datetime,
    key_id: str | None,
    key_limit_micro: int | None,
) -> int:
    """Returns the available amount after the hold, or raises ReserveRefused. A request id that
    was reserved before fails with a unique violation and changes nothing."""
    expires = now + timedelta(seconds=ttl_s)
    if key_id is None or key_limit_micro is None:
        row = await conn.fetchrow(RESERVE, request_id, account_id, amount_micro, now, expires)
        if row["available"] is None:
            raise ReserveRefused("balance", row["snapshot_available"] or 0)
        return int(row["available"])
    row = await conn.fetchrow(
        RESERVE_WITH_KEY_LIMIT, request_id, account_id, amount_micro, now, expires, key_id, key_limit_micro
    )
    if row["available"] is not None:
        return int(row["available"])
    account_available = row["account_available"] or 0
    key_exceeded = (row["key_used"] or 0) + amount_micro > key_limit_micro
    if account_available >= amount_micro or key_exceeded:
        raise ReserveRefused("key_limit", account_available)  # the key is checked first, as always
    raise ReserveRefused("balance", account_available)


async def hold(
    pool: asyncpg.Pool,
    request_id: str,
    account_id: str,
    amount_micro: int,
    ttl_s: float,
    now: datetime,
    key_id: str | None,
    key_limit_micro: int | None,
) -> int:
    """`reserve` on a pooled connection, with its refusal as the 402 the caller gets. Billing holds
    credit this way, and so does a gateway that has the database (docs/billing.md)."""
    # Safe to run twice: the statement is atomic, and if an attempt lost with its connection did
    # commit, the retry fails on the reservation's request id instead of holding twice.
    try:
        return await on_pooled_connection(
            pool, lambda conn: reserve(conn, request_id, account_id, amount_micro, ttl_s, now, key_id, key_limit_micro)
        )
    except ReserveRefused as refused:
        if refused.reason == "key_limit":
            raise key_limit_exceeded(key_limit_micro or 0) from None
        raise insufficient_balance(amount_micro, refused.available_micro) from None


async def settle_batch(conn: asyncpg.Connection, events: Sequence[UsageEvent], now: datetime) -> list[bool]:
    """Settle every event in one transaction; returns, per event, whether it was applied (False:
    it had been settled before, or came earlier in the batch)."""
    request_ids = sorted({e.request_id for e in events})
    charge_keys = sorted({charge_key(e.request_id) for e in events if e.cost_pico > 0})
    account_ids = sorted({e.account_id for e in events})
    async with conn.transaction():
        reservations: dict[str, ReservationRow] = {}
        existing: set[str] = set()
        carries: dict[str, int] = {}
        for row in await conn.fetch(READ_FOR_SETTLEMENT, request_ids, charge_keys, account_ids):
            kind, key = row["row_kind"], row["id"]
            if kind == "reservation":
                reservations[key] = ReservationRow(row["amount"], row["status"], row["key_id"])
            elif kind == "balance":
                carries[key] = row["amount"]
            else:
                existing.add(key)
        plan = plan_settlement(events, reservations, existing, carries)
        if plan.changes_anything:
            await conn.execute(APPLY_PLAN, *plan_arguments(plan), now)
    return plan.applied


def plan_arguments(plan: SettlementPlan) -> list[list[Any]]:
    """The plan as the column arrays APPLY_PLAN unnests ($1 … $16). Keys are written in sorted order
    (the order their row locks are taken in)."""
    entries = plan.entries
    balances = sorted(plan.balances.items())
    keys = sorted(plan.keys.items())
    reservations = sorted(plan.reservations.items())
    return [
        [e.account_id for e in entries],
        [e.kind for e in entries],
        [e.amount_micro for e in entries],
        [e.held_delta_micro for e in entries],
        [e.cost_pico for e in entries],
        [e.idempotency_key for e in entries],
        [e.reason for e in entries],
        [a for a, _ in balances],
        [c.deduct_micro for _, c in balances],
        [c.release_micro for _, c in balances],
        [c.carry_pico for _, c in balances],
        [k for k, _ in keys],
        [c.spent_micro for _, c in keys],
        [c.held_micro for _, c in keys],
        [r for r, _ in reservations],
        [c for _, c in reservations],
    ]
