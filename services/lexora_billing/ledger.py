"""The credit ledger in the database (billing owns balances, reservations and ledger_entries).

Every balance change is one transaction that also writes an entry with a unique idempotency key,
so a redelivered event or a retried grant can never apply twice.

On Postgres the two paths every request takes run on asyncpg directly (`pg_ledger`): reserve is one
statement, and settlement writes a whole batch of usage events in one transaction. SQLite runs the
same plan (`settlement`) through SQLAlchemy Core, one writer at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lexora_billing import pg_ledger
from lexora_billing.refusals import insufficient_balance, key_limit_exceeded
from lexora_billing.settlement import ReservationRow, SettlementPlan, charge_key, plan_settlement
from lexora_contracts.messages import Balance, UsageEvent
from lexora_runtime.db import create_asyncpg_pool, insert_ignoring_duplicates, is_sqlite
from lexora_runtime.schema import balances, key_spend, ledger_entries, reservations

if TYPE_CHECKING:
    import asyncpg


class Ledger:
    def __init__(self, engine: AsyncEngine, url: str):
        self._engine = engine
        # SQLite has one writer at a time anyway; queueing writers here avoids lock-timeout errors.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if is_sqlite(url) else None
        self._postgres = not is_sqlite(url)
        self._pool: asyncpg.Pool | None = None
        self._new_key_row = insert_ignoring_duplicates(url, key_spend)
        self._new_balance_row = insert_ignoring_duplicates(url, balances)
        self._new_ledger_entry = insert_ignoring_duplicates(url, ledger_entries)

    async def open(self, pool_size: int = 10) -> None:
        """On Postgres, the asyncpg pool of the hot paths (reserve, settle). Without it (SQLite, or
        before open) every path runs through SQLAlchemy."""
        if self._postgres and self._pool is None:
            # min_size=0: no connection at start-up, so billing starts (and reports its database
            # as down) while Postgres is not reachable yet, as it does through SQLAlchemy.
            self._pool = await create_asyncpg_pool(self._engine, min_size=0, max_size=pool_size)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock or contextlib.nullcontext(), self._engine.begin() as conn:
            yield conn

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
        if self._pool is not None:
            return await pg_ledger.hold(
                self._pool, request_id, account_id, amount_micro, ttl_s, now, limited_key, key_limit_micro
            )
        async with self._transaction() as conn:
            if limited_key is not None:
                await self._hold_on_key(conn, limited_key, amount_micro, key_limit_micro or 0)
            held = await conn.execute(
                update(balances)
                .where(
                    balances.c.account_id == account_id,
                    balances.c.balance_micro - balances.c.held_micro >= amount_micro,
                )
                .values(held_micro=balances.c.held_micro + amount_micro, updated_at=now)
                .returning(balances.c.balance_micro - balances.c.held_micro)
            )
            remaining = held.scalar_one_or_none()
            if remaining is None:
                raise insufficient_balance(amount_micro, await self._available(conn, account_id))
            await self._journal_hold(conn, account_id, request_id, "hold", amount_micro, now)
            await conn.execute(
                insert(reservations).values(
                    request_id=request_id,
                    account_id=account_id,
                    key_id=limited_key,
                    amount_micro=amount_micro,
                    status="held",
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl_s),
                )
            )
        return int(remaining)

    @staticmethod
    async def _journal_hold(
        conn: AsyncConnection, account_id: str, request_id: str, kind: str, amount_micro: int, now: datetime
    ) -> None:
        """Holds and releases are ledger entries too, so `held` can be re-derived like the balance."""
        if not amount_micro:
            return
        await conn.execute(
            insert(ledger_entries).values(
                account_id=account_id,
                kind=kind,
                amount_micro=0,
                held_delta_micro=amount_micro if kind == "hold" else -amount_micro,
                idempotency_key=f"{kind}:{request_id}",
                actor="billing",
                created_at=now,
            )
        )

    async def _hold_on_key(self, conn: AsyncConnection, key_id: str, amount_micro: int, limit_micro: int) -> None:
        await conn.execute(self._new_key_row.values(key_id=key_id, spent_micro=0, held_micro=0))
        held = await conn.execute(
            update(key_spend)
            .where(
                key_spend.c.key_id == key_id,
                key_spend.c.spent_micro + key_spend.c.held_micro + amount_micro <= limit_micro,
            )
            .values(held_micro=key_spend.c.held_micro + amount_micro)
        )
        if held.rowcount == 0:
            raise key_limit_exceeded(limit_micro)

    @staticmethod
    async def _available(conn: AsyncConnection, account_id: str) -> int:
        row = (
            await conn.execute(
                select(balances.c.balance_micro - balances.c.held_micro).where(balances.c.account_id == account_id)
            )
        ).first()
        return int(row[0]) if row else 0

    async def settle(self, event: UsageEvent, now: datetime) -> bool:
        """Charge a finished request's exact cost and release the rest of its hold. Idempotent.

        Returns False when the event was already applied.
        """
        try:
            [applied] = await self.settle_batch([event], now)
        except IntegrityError:
            return False  # the charge entry exists: this event was applied before
        except Exception as exc:
            if _is_unique_violation(exc):
                return False
            raise
        return applied

    async def settle_batch(self, events: Sequence[UsageEvent], now: datetime) -> list[bool]:
        """Settle many usage events in ONE transaction (all or none of them); returns, per event,
        whether it was applied (False: already settled before, or earlier in this batch).

        Each event changes exactly what `settle` would change for it alone, in the order given
        (see `settlement`); a failure leaves everything as it was, for the caller to retry.
        """
        if not events:
            return []
        if self._pool is not None:
            async with self._pool.acquire() as conn:
                return await pg_ledger.settle_batch(conn, events, now)
        async with self._transaction() as conn:
            plan = await self._plan_locked(conn, events)
            await self._apply(conn, plan, now)
        return plan.applied

    @staticmethod
    async def _plan_locked(conn: AsyncConnection, events: Sequence[UsageEvent]) -> SettlementPlan:
        request_ids = sorted({e.request_id for e in events})
        charge_keys = sorted({charge_key(e.request_id) for e in events if e.cost_pico > 0})
        account_ids = sorted({e.account_id for e in events})
        rows = await conn.execute(
            select(reservations.c.request_id, reservations.c.amount_micro, reservations.c.status, reservations.c.key_id)
            .where(reservations.c.request_id.in_(request_ids))
            .order_by(reservations.c.request_id)
            .with_for_update()
        )
        found = {r.request_id: ReservationRow(r.amount_micro, r.status, r.key_id) for r in rows}
        existing: set[str] = set()
        if charge_keys:
            keys = await conn.execute(
                select(ledger_entries.c.idempotency_key).where(ledger_entries.c.idempotency_key.in_(charge_keys))
            )
            existing = {k for (k,) in keys}
        carries = await conn.execute(
            select(balances.c.account_id, balances.c.carry_pico)
            .where(balances.c.account_id.in_(account_ids))
            .order_by(balances.c.account_id)
            .with_for_update()
        )
        return plan_settlement(events, found, existing, {a: c for a, c in carries})

    async def _apply(self, conn: AsyncConnection, plan: SettlementPlan, now: datetime) -> None:
        if plan.entries:
            await conn.execute(
                insert(ledger_entries),
                [
                    {
                        "account_id": e.account_id,
                        "kind": e.kind,
                        "amount_micro": e.amount_micro,
                        "held_delta_micro": e.held_delta_micro,
                        "cost_pico": e.cost_pico,
                        "idempotency_key": e.idempotency_key,
                        "actor": "billing",
                        "reason": e.reason,
                        "created_at": now,
                    }
                    for e in plan.entries
                ],
            )
        if plan.balances:
            await conn.execute(
                update(balances)
                .where(balances.c.account_id == bindparam("b_account"))
                .values(
                    balance_micro=balances.c.balance_micro - bindparam("b_deduct"),
                    held_micro=balances.c.held_micro - bindparam("b_release"),
                    carry_pico=bindparam("b_carry"),
                    updated_at=now,
                ),
                [
                    {"b_account": a, "b_deduct": c.deduct_micro, "b_release": c.release_micro, "b_carry": c.carry_pico}
                    for a, c in sorted(plan.balances.items())
                ],
            )
        for key_id, change in sorted(plan.keys.items()):
            await conn.execute(self._new_key_row.values(key_id=key_id, spent_micro=0, held_micro=0))
            await conn.execute(
                update(key_spend)
                .where(key_spend.c.key_id == key_id)
                .values(
                    spent_micro=key_spend.c.spent_micro + change.spent_micro,
                    held_micro=key_spend.c.held_micro + change.held_micro,
                )
            )
        if plan.reservations:
            await conn.execute(
                update(reservations)
                .where(reservations.c.request_id == bindparam("r_id"))
                .values(status="settled", charged_micro=bindparam("r_charged"), closed_at=now),
                [{"r_id": r, "r_charged": c} for r, c in sorted(plan.reservations.items())],
            )

    async def _settle_key(self, conn: AsyncConnection, key_id: str, charged_micro: int, held_micro: int) -> None:
        """Every key's spend is kept (so a limit set later counts what came before)."""
        if not charged_micro and not held_micro:
            return
        await conn.execute(self._new_key_row.values(key_id=key_id, spent_micro=0, held_micro=0))
        await conn.execute(
            update(key_spend)
            .where(key_spend.c.key_id == key_id)
            .values(
                spent_micro=key_spend.c.spent_micro + charged_micro,
                held_micro=key_spend.c.held_micro - held_micro,
            )
        )

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
        async with self._transaction() as conn:
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
            async with self._transaction() as conn:
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
                await self._journal_hold(conn, row.account_id, request_id, "release", row.amount_micro, now)
                await conn.execute(
                    update(balances)
                    .where(balances.c.account_id == row.account_id)
                    .values(held_micro=balances.c.held_micro - row.amount_micro, updated_at=now)
                )
                if row.key_id:
                    await self._settle_key(conn, row.key_id, 0, row.amount_micro)
                released += 1
        return released

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(select(1))


def utcnow() -> datetime:
    return datetime.now(UTC)


def _is_unique_violation(exc: BaseException) -> bool:
    import asyncpg

    return isinstance(exc, asyncpg.UniqueViolationError)
