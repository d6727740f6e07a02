"""The credit ledger in the database (billing owns balances, reservations and ledger_entries).

Every balance change is one transaction that also writes an entry with a unique idempotency key,
so a redelivered event or a retried grant can never apply twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lexora_contracts.errors import InsufficientCredits
from lexora_contracts.messages import Balance, UsageEvent
from lexora_contracts.money import apply_charge, micro_to_usd_str
from lexora_runtime.db import insert_ignoring_duplicates, is_sqlite
from lexora_runtime.schema import balances, key_spend, ledger_entries, reservations


class Ledger:
    def __init__(self, engine: AsyncEngine, url: str):
        self._engine = engine
        # SQLite has one writer at a time anyway; queueing writers here avoids lock-timeout errors.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if is_sqlite(url) else None
        self._new_key_row = insert_ignoring_duplicates(url, key_spend)
        self._new_balance_row = insert_ignoring_duplicates(url, balances)
        self._new_ledger_entry = insert_ignoring_duplicates(url, ledger_entries)

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
                available = await self._available(conn, account_id)
                raise InsufficientCredits(
                    f"Insufficient balance: this request may cost up to ${micro_to_usd_str(amount_micro)} and "
                    f"${micro_to_usd_str(max(available, 0))} is available. Add credits to continue."
                )
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
            raise InsufficientCredits(
                f"This API key's spend limit of ${micro_to_usd_str(limit_micro)} would be exceeded by this request. "
                "Raise the key's limit or use another key."
            )

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
            async with self._transaction() as conn:
                reservation = (
                    await conn.execute(
                        select(reservations.c.amount_micro, reservations.c.status, reservations.c.key_id)
                        .where(reservations.c.request_id == event.request_id)
                        .with_for_update()
                    )
                ).first()
                if reservation is not None and reservation.status == "settled":
                    return False
                # A hold the sweeper already released is no longer part of held_micro.
                still_held = reservation.amount_micro if reservation and reservation.status == "held" else 0
                charged = 0
                if event.cost_pico > 0:
                    charged = await self._charge(conn, event, still_held, now)
                elif still_held:
                    await conn.execute(
                        update(balances)
                        .where(balances.c.account_id == event.account_id)
                        .values(held_micro=balances.c.held_micro - still_held, updated_at=now)
                    )
                await self._journal_hold(conn, event.account_id, event.request_id, "release", still_held, now)
                key_held = still_held if reservation is not None and reservation.key_id else 0
                await self._settle_key(conn, event.key_id, charged, key_held)
                if reservation is not None:
                    await conn.execute(
                        update(reservations)
                        .where(reservations.c.request_id == event.request_id)
                        .values(status="settled", charged_micro=charged, closed_at=now)
                    )
            return True
        except IntegrityError:
            return False  # the charge entry exists: this event was applied before

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

    async def _charge(self, conn: AsyncConnection, event: UsageEvent, still_held: int, now: datetime) -> int:
        row = (
            await conn.execute(
                select(balances.c.carry_pico).where(balances.c.account_id == event.account_id).with_for_update()
            )
        ).first()
        carry = row.carry_pico if row else 0
        deduct, new_carry = apply_charge(carry, event.cost_pico)
        await conn.execute(
            insert(ledger_entries).values(
                account_id=event.account_id,
                kind="charge",
                amount_micro=-deduct,
                cost_pico=event.cost_pico,
                idempotency_key=f"charge:{event.request_id}",
                actor="billing",
                reason=f"{event.model} {event.prompt_tokens}+{event.completion_tokens} tokens",
                created_at=now,
            )
        )
        await conn.execute(
            update(balances)
            .where(balances.c.account_id == event.account_id)
            .values(
                balance_micro=balances.c.balance_micro - deduct,
                held_micro=balances.c.held_micro - still_held,
                carry_pico=new_carry,
                updated_at=now,
            )
        )
        return deduct

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
