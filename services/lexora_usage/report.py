"""Aggregations over usage_records for one account (usage owns the table). Days are UTC dates."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from sqlalchemy import Date, cast, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lexora_contracts.usage_api import (
    DAILY_DAYS,
    Activity,
    DailyTotals,
    KeySpendList,
    ModelTotals,
    Totals,
    UsageReport,
    UsageReportRequest,
)
from lexora_db.schema import usage_records as u

TOKENS = u.c.prompt_tokens + u.c.completion_tokens


async def usage_report(engine: AsyncEngine, request: UsageReportRequest) -> UsageReport:
    filters = [u.c.account_id == request.account_id]
    if request.start is not None:
        filters.append(u.c.received_at >= request.start)
    if request.end is not None:
        filters.append(u.c.received_at < request.end)
    if request.model is not None:
        filters.append(u.c.model == request.model)
    first_day = request.today - timedelta(days=DAILY_DAYS - 1)
    # The UTC date of a timestamptz (a plain cast would take the session's zone).
    day = cast(func.timezone("UTC", u.c.received_at), Date)
    async with engine.connect() as conn:
        totals = (
            await conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(u.c.prompt_tokens), 0),
                    func.coalesce(func.sum(u.c.completion_tokens), 0),
                    func.coalesce(func.sum(u.c.cost_pico), 0),
                    func.coalesce(func.avg(u.c.latency_ms), 0),
                ).where(*filters)
            )
        ).one()
        per_model = (
            await conn.execute(
                select(u.c.model, func.count(), func.sum(TOKENS), func.sum(u.c.cost_pico))
                .where(*filters)
                .group_by(u.c.model)
                .order_by(func.sum(u.c.cost_pico).desc(), u.c.model)
            )
        ).all()
        # The daily series ignores the filters: always the last 30 days of the account.
        per_day = (
            await conn.execute(
                select(day, func.count(), func.sum(TOKENS), func.sum(u.c.cost_pico))
                .where(
                    u.c.account_id == request.account_id,
                    u.c.received_at >= datetime.combine(first_day, time(), UTC),
                )
                .group_by(day)
            )
        ).all()
        recent = (
            await conn.execute(
                select(u)
                .where(*filters)
                .order_by(u.c.received_at.desc(), u.c.request_id)
                .limit(request.limit)
                .offset((request.page - 1) * request.limit)
            )
        ).all()
    by_day = {row[0]: row for row in per_day}
    return UsageReport(
        summary=Totals(
            requests=totals[0],
            prompt_tokens=totals[1],
            completion_tokens=totals[2],
            cost_pico=totals[3],
            avg_latency_ms=round(float(totals[4])),
        ),
        daily=[
            DailyTotals(
                date=d,
                requests=by_day[d][1] if d in by_day else 0,
                tokens=by_day[d][2] if d in by_day else 0,
                cost_pico=by_day[d][3] if d in by_day else 0,
            )
            for d in (request.today - timedelta(days=n) for n in range(DAILY_DAYS))
        ],
        by_model=[ModelTotals(model=m, requests=n, tokens=t, cost_pico=c) for m, n, t, c in per_model],
        recent=[
            Activity(
                request_id=row.request_id,
                model=row.model,
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
                cost_pico=row.cost_pico,
                latency_ms=row.latency_ms,
                status_code=row.status_code,
                thinking_used=row.thinking_used,
                created_at=row.received_at,
            )
            for row in recent
        ],
        total_recent=totals[0],
    )


async def key_costs(engine: AsyncEngine, account_id: str) -> KeySpendList:
    """What each of the account's keys has cost, from its usage records (every key, limited or not)."""
    query = select(u.c.key_id, func.sum(u.c.cost_pico)).where(u.c.account_id == account_id).group_by(u.c.key_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return KeySpendList(cost_pico={key_id: int(cost) for key_id, cost in rows})
