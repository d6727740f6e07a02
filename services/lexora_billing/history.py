"""An account's transaction history from the ledger: every credit (top-ups, adjustments) as it
happened, and charges summed per day in the account's timezone. Holds and releases are not
transactions (they set money aside and give it back) and are left out."""

from __future__ import annotations

from sqlalchemy import Date, cast, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lexora_contracts.usage_api import Transaction, TransactionsRequest
from lexora_db.schema import ledger_entries as e

CREDIT_KINDS = ("topup", "adjustment")
CHARGE_KINDS = ("charge", "refund")


def merged(credits: list[Transaction], charge_days: list[Transaction], limit: int) -> list[Transaction]:
    """Newest first; a day of charges sorts at the end of its day, above that day's credits."""

    def when(t: Transaction) -> tuple[str, int]:
        if t.created_at is not None:
            return (t.created_at.isoformat(), 0)
        return (f"{t.day.isoformat()}T99", 1)  # type: ignore[union-attr]

    return sorted([*credits, *charge_days], key=when, reverse=True)[:limit]


async def transactions(engine: AsyncEngine, request: TransactionsRequest) -> list[Transaction]:
    filters = [e.c.account_id == request.account_id]
    if request.start is not None:
        filters.append(e.c.created_at >= request.start)
    if request.end is not None:
        filters.append(e.c.created_at < request.end)
    day = cast(func.timezone(request.timezone, e.c.created_at), Date)
    async with engine.connect() as conn:
        credit_rows = (
            await conn.execute(
                select(e.c.kind, e.c.amount_micro, e.c.created_at, e.c.reason, e.c.actor)
                .where(*filters, e.c.kind.in_(CREDIT_KINDS))
                .order_by(e.c.created_at.desc(), e.c.id.desc())
                .limit(request.limit)
            )
        ).all()
        day_rows = (
            await conn.execute(
                select(day, func.sum(e.c.amount_micro), func.count())
                .where(*filters, e.c.kind.in_(CHARGE_KINDS))
                .group_by(day)
                .order_by(day.desc())
                .limit(request.limit)
            )
        ).all()
    credits = [
        Transaction(kind=r.kind, amount_micro=r.amount_micro, created_at=r.created_at, reason=r.reason, actor=r.actor)
        for r in credit_rows
    ]
    days = [Transaction(kind="charges", amount_micro=int(total), day=d, count=n) for d, total, n in day_rows]
    return merged(credits, days, request.limit)
