"""The credit ledger in the database (billing owns balances, reservations, ledger_entries and
key_spend).

Every balance change is one transaction that also writes an entry with a unique idempotency key,
so a redelivered event or a retried grant can never apply twice.

The two paths every request takes run on asyncpg directly, each statement prepared once per
connection:

- reserve is ONE statement (one round trip, its own transaction): the balance check and hold, the
  key's spend-limit check and hold, the `hold:<request id>` ledger entry and the reservation row
  are data-modifying CTEs of a single statement, so they all happen or none does (`hold`); a
  credit lease is granted the same way (`leases`);
- settle takes a whole batch of usage events in one transaction: BEGIN, one statement that reads
  (and locks) what the batch touches, one that writes every entry, balance, key and reservation
  (`unnest` arrays), COMMIT: four round trips, however many events (the plan: `settlement`).

No SQLAlchemy on these paths (no statement building, no pool pre-ping): the texts are constants,
and asyncpg keeps each one prepared on every pooled connection. The rest (grants, balances, the
sweeper, summaries) is SQLAlchemy Core on the same database.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import case, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lexora_billing import leases
from lexora_billing.leases import LeasePolicy
from lexora_billing.refusals import insufficient_balance, key_limit_exceeded
from lexora_billing.settlement import LeaseRow, ReservationRow, SettlementPlan, charge_keys_of, plan_settlement
from lexora_contracts.messages import Balance, LeaseAcquireRequest, LeaseReturnRequest, UsageEvent
from lexora_db.engine import create_asyncpg_pool, on_pooled_connection
from lexora_db.schema import balances, credit_leases, key_spend, ledger_entries, reservations

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
# order (reservations, then leases, then balances, each sorted; UNION ALL runs its branches in
# order), the order of the sweepers, of lease returns and of reserve, so concurrent writers never
# deadlock.
READ_FOR_SETTLEMENT = """
WITH locked_reservations AS (
    SELECT request_id, amount_micro, status, key_id FROM reservations
    WHERE request_id = ANY($1::text[]) ORDER BY request_id FOR UPDATE
), locked_leases AS (
    SELECT id, held_micro, settled_requests, expected_requests, status, key_id FROM credit_leases
    WHERE id = ANY($4::text[]) ORDER BY id FOR UPDATE
), locked_balances AS (
    SELECT account_id, carry_pico FROM balances
    WHERE account_id = ANY($3::text[]) ORDER BY account_id FOR UPDATE
)
SELECT 'reservation' AS row_kind, request_id AS id, amount_micro AS amount, status, key_id,
       NULL::bigint AS settled, NULL::bigint AS expected FROM locked_reservations
UNION ALL
SELECT 'lease', id, held_micro, status, key_id, settled_requests, expected_requests FROM locked_leases
UNION ALL
SELECT 'balance', account_id, carry_pico, NULL, NULL, NULL, NULL FROM locked_balances
UNION ALL
SELECT 'charge', idempotency_key, NULL, NULL, NULL, NULL, NULL FROM ledger_entries
WHERE idempotency_key = ANY($2::text[])
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
), lease_rows AS (
    UPDATE credit_leases l
    SET held_micro = l.held_micro - d.released, settled_micro = l.settled_micro + d.settled,
        settled_requests = l.settled_requests + d.requests,
        status = CASE WHEN d.closed THEN 'closed' ELSE l.status END,
        closed_at = CASE WHEN d.closed THEN $17::timestamptz ELSE l.closed_at END
    FROM unnest($18::text[], $19::bigint[], $20::bigint[], $21::int[], $22::bool[])
         AS d(lease_id, released, settled, requests, closed)
    WHERE l.id = d.lease_id
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
    """`reserve` on a pooled connection, with its refusal as the 402 the caller gets."""
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


async def settle_batch_on(conn: asyncpg.Connection, events: Sequence[UsageEvent], now: datetime) -> list[bool]:
    """Settle every event in one transaction; returns, per event, whether it was applied (False:
    it had been settled before, or came earlier in the batch)."""
    request_ids = sorted({e.request_id for e in events if e.lease_id is None})
    lease_ids = sorted({e.lease_id for e in events if e.lease_id is not None})
    account_ids = sorted({e.account_id for e in events})
    async with conn.transaction():
        reservations: dict[str, ReservationRow] = {}
        leases: dict[str, LeaseRow] = {}
        existing: set[str] = set()
        carries: dict[str, int] = {}
        rows = await conn.fetch(READ_FOR_SETTLEMENT, request_ids, charge_keys_of(events), account_ids, lease_ids)
        for row in rows:
            kind, key = row["row_kind"], row["id"]
            if kind == "reservation":
                reservations[key] = ReservationRow(row["amount"], row["status"], row["key_id"])
            elif kind == "lease":
                leases[key] = LeaseRow(row["amount"], row["settled"], row["expected"], row["status"], row["key_id"])
            elif kind == "balance":
                carries[key] = row["amount"]
            else:
                existing.add(key)
        plan = plan_settlement(events, reservations, existing, carries, leases)
        if plan.changes_anything:
            await conn.execute(APPLY_PLAN, *plan_arguments(plan), now, *lease_arguments(plan))
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


def lease_arguments(plan: SettlementPlan) -> list[list[Any]]:
    """The plan's lease changes as the arrays APPLY_PLAN unnests ($18 … $22), sorted by lease id."""
    leases = sorted(plan.leases.items())
    return [
        [lease_id for lease_id, _ in leases],
        [c.released_micro for _, c in leases],
        [c.settled_micro for _, c in leases],
        [c.settled_requests for _, c in leases],
        [c.closed for _, c in leases],
    ]


class Ledger:
    """The ledger on `engine`'s database. `open` it before reserving or settling: those run on an
    asyncpg pool of their own."""

    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._pool: asyncpg.Pool | None = None
        self._new_key_row = insert(key_spend).on_conflict_do_nothing()
        self._new_balance_row = insert(balances).on_conflict_do_nothing()
        self._new_ledger_entry = insert(ledger_entries).on_conflict_do_nothing()

    async def open(self, pool_size: int = 10) -> None:
        """The asyncpg pool of the hot paths (reserve, settle)."""
        if self._pool is None:
            # min_size=0: no connection at start-up, so billing starts (and reports its database
            # as down) while Postgres is not reachable yet, as it does through SQLAlchemy.
            self._pool = await create_asyncpg_pool(self._engine, min_size=0, max_size=pool_size)

    @property
    def _hot_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("Ledger.open() must be awaited before reserving or settling")
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def reserve(
        self,
        request_id: str,
        account_id: str,
        amount_micro: int,
        ttl_s: float,
        now: datetime,
        key_id: str | None = None,
        key_limit_micro: int | None = None,
    ) -> int:
        """Hold `amount_micro` for a request, atomically, or refuse with 402. Returns what remains
        available. A key with a spend limit also holds the amount against that limit."""
        limited_key = key_id if key_limit_micro is not None else None
        return await hold(
            self._hot_pool, request_id, account_id, amount_micro, ttl_s, now, limited_key, key_limit_micro
        )

    # ---- credit leases (lexora_billing.leases) ----------------------------------------------------
    async def acquire_lease(self, request: LeaseAcquireRequest, now: datetime, policy: LeasePolicy) -> int:
        """Grant a lease, or refuse with the 402 a reservation would get; returns its amount. The
        lease it replaces is shrunk first, in a transaction of its own: committed even when the
        new one is refused, so its free part is the account's again either way."""

        async def work(conn: asyncpg.Connection) -> int:
            if request.replaces is not None:
                r = request.replaces
                async with conn.transaction():
                    await leases.shrink(conn, r.lease_id, r.keep_micro, r.requests, r.final, now)
            return await leases.acquire(
                conn,
                request.lease_id,
                request.holder,
                request.account_id,
                request.need_micro,
                request.ttl_s,
                now,
                policy,
                request.key_id if request.key_spend_limit_micro is not None else None,
                request.key_spend_limit_micro,
            )

        try:
            return await on_pooled_connection(self._hot_pool, work)
        except leases.LeaseRefused as refused:
            if refused.reason == "key_limit":
                raise key_limit_exceeded(request.key_spend_limit_micro or 0) from None
            raise insufficient_balance(request.need_micro, refused.available_micro) from None

    async def return_lease(self, request: LeaseReturnRequest, now: datetime) -> int:
        """Shrink a lease to what its holder may still be charged for; returns what was released."""

        async def work(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                return await leases.shrink(
                    conn, request.lease_id, request.keep_micro, request.requests, request.final, now
                )

        return await on_pooled_connection(self._hot_pool, work)

    async def expire_leases(self, now: datetime) -> int:
        """Release what leases past their expiry still hold (their holder died, or the last usage
        events of a returned lease never came). Returns how many expired."""
        async with self._hot_pool.acquire() as conn:
            expired = [row["id"] for row in await conn.fetch(leases.EXPIRED, now)]
            for lease_id in expired:
                async with conn.transaction():
                    await leases.expire(conn, lease_id, now)
        return len(expired)

    async def other_lease_holders(self, account_id: str, holder: str) -> list[str]:
        """The replicas other than `holder` whose active leases on the account hold credit."""
        async with self._hot_pool.acquire() as conn:
            return [row["holder"] for row in await conn.fetch(leases.OTHER_HOLDERS, account_id, holder)]

    async def settle(self, event: UsageEvent, now: datetime) -> bool:
        """Charge a finished request's exact cost and release the rest of its hold. Idempotent.

        Returns False when the event was already applied.
        """
        try:
            [applied] = await self.settle_batch([event], now)
        except asyncpg.UniqueViolationError:
            return False  # the charge entry exists: this event was applied before
        return applied

    async def settle_batch(self, events: Sequence[UsageEvent], now: datetime) -> list[bool]:
        """Settle many usage events in ONE transaction (all or none of them); returns, per event,
        whether it was applied (False: already settled before, or earlier in this batch).

        Each event changes exactly what `settle` would change for it alone, in the order given
        (see `settlement`); a failure leaves everything as it was, for the caller to retry.
        """
        if not events:
            return []
        async with self._hot_pool.acquire() as conn:
            return await settle_batch_on(conn, events, now)

    async def rederive(self, account_id: str) -> tuple[int, int]:
        """(balance, held) recomputed from the ledger entries alone: the audit of the balances row."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        func.coalesce(func.sum(ledger_entries.c.amount_micro), 0),
                        func.coalesce(func.sum(ledger_entries.c.held_delta_micro), 0),
                    ).where(ledger_entries.c.account_id == account_id)
                )
            ).one()
        return int(row[0]), int(row[1])

    async def credits_summary(self, account_id: str) -> tuple[int, int]:
        """(credited, charged) in micro-USD, from the ledger entries."""
        credited = func.coalesce(func.sum(case((ledger_entries.c.amount_micro > 0, ledger_entries.c.amount_micro))), 0)
        charged = func.coalesce(func.sum(case((ledger_entries.c.kind == "charge", -ledger_entries.c.amount_micro))), 0)
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(credited, charged).where(ledger_entries.c.account_id == account_id))).one()
        return int(row[0]), int(row[1])

    async def key_spend(self, key_id: str) -> tuple[int, int]:
        """(spent, held) in micro-USD."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(key_spend.c.spent_micro, key_spend.c.held_micro).where(key_spend.c.key_id == key_id)
                )
            ).first()
        return (row.spent_micro, row.held_micro) if row else (0, 0)

    async def grant(
        self,
        account_id: str,
        amount_micro: int,
        idempotency_key: str,
        actor: str,
        reason: str,
        now: datetime,
        kind: str = "adjustment",
    ) -> bool:
        """Add credit (an operator's adjustment or a paid top-up). Returns False if this key was
        already granted, so a retried or re-delivered grant credits once."""
        async with self._engine.begin() as conn:
            # Only a clash on the ledger key means "already applied". The balance row is created
            # without conflict first: two first grants to a new account must both land.
            entry = await conn.execute(
                self._new_ledger_entry.values(
                    account_id=account_id,
                    kind=kind,
                    amount_micro=amount_micro,
                    idempotency_key=f"grant:{idempotency_key}",
                    actor=actor,
                    reason=reason,
                    created_at=now,
                ).returning(ledger_entries.c.id)
            )
            if entry.first() is None:
                return False
            await conn.execute(
                self._new_balance_row.values(
                    account_id=account_id, balance_micro=0, held_micro=0, carry_pico=0, updated_at=now
                )
            )
            await conn.execute(
                update(balances)
                .where(balances.c.account_id == account_id)
                .values(balance_micro=balances.c.balance_micro + amount_micro, updated_at=now)
            )
        return True

    async def balance(self, account_id: str) -> Balance:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(balances.c.balance_micro, balances.c.held_micro, balances.c.carry_pico).where(
                        balances.c.account_id == account_id
                    )
                )
            ).first()
        if row is None:
            return Balance(account_id=account_id, balance_micro=0, held_micro=0, carry_pico=0)
        return Balance(
            account_id=account_id,
            balance_micro=row.balance_micro,
            held_micro=row.held_micro,
            carry_pico=row.carry_pico,
        )

    async def oldest_overdue_hold_s(self, now: datetime) -> float:
        """How long the oldest hold (a reservation or a credit lease) still held has outlived its
        expiry (0 when none has)."""
        async with self._engine.connect() as conn:
            oldest_reservation = await conn.scalar(
                select(func.min(reservations.c.expires_at)).where(
                    reservations.c.status == "held", reservations.c.expires_at < now
                )
            )
            oldest_lease = await conn.scalar(
                select(func.min(credit_leases.c.expires_at)).where(
                    credit_leases.c.status.in_(("active", "returned")), credit_leases.c.expires_at < now
                )
            )
        overdue = [t for t in (oldest_reservation, oldest_lease) if t is not None]
        return (now - min(overdue)).total_seconds() if overdue else 0.0

    async def release_expired(self, now: datetime) -> int:
        """Release holds whose request never settled (its gateway or router died). Returns how many."""
        async with self._engine.connect() as conn:
            expired = (
                await conn.execute(
                    select(reservations.c.request_id).where(
                        reservations.c.status == "held", reservations.c.expires_at < now
                    )
                )
            ).all()
        released = 0
        for (request_id,) in expired:
            async with self._engine.begin() as conn:
                row = (
                    await conn.execute(
                        update(reservations)
                        .where(reservations.c.request_id == request_id, reservations.c.status == "held")
                        .values(status="released", closed_at=now)
                        .returning(reservations.c.account_id, reservations.c.amount_micro, reservations.c.key_id)
                    )
                ).first()
                if row is None:
                    continue
                await self._release(conn, request_id, row.account_id, row.key_id, row.amount_micro, now)
                released += 1
        return released

    async def _release(
        self,
        conn: AsyncConnection,
        request_id: str,
        account_id: str,
        key_id: str | None,
        amount_micro: int,
        now: datetime,
    ) -> None:
        """A released hold leaves the balance (and its key's spend) and is journaled like the hold,
        so `held` can be re-derived like the balance."""
        if amount_micro:
            await conn.execute(
                insert(ledger_entries).values(
                    account_id=account_id,
                    kind="release",
                    amount_micro=0,
                    held_delta_micro=-amount_micro,
                    idempotency_key=f"release:{request_id}",
                    actor="billing",
                    created_at=now,
                )
            )
        await conn.execute(
            update(balances)
            .where(balances.c.account_id == account_id)
            .values(held_micro=balances.c.held_micro - amount_micro, updated_at=now)
        )
        if key_id and amount_micro:
            # Every key's spend is kept (so a limit set later counts what came before).
            await conn.execute(self._new_key_row.values(key_id=key_id, spent_micro=0, held_micro=0))
            await conn.execute(
                update(key_spend)
                .where(key_spend.c.key_id == key_id)
                .values(held_micro=key_spend.c.held_micro - amount_micro)
            )

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(select(1))


def utcnow() -> datetime:
    return datetime.now(UTC)
