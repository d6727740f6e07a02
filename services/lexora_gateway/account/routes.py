"""What an API key's holder can ask about their account: usage, the key itself, credits."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.messages import Identity
from lexora_contracts.money import MICRO_PER_CREDIT, MICRO_PER_USD
from lexora_contracts.usage_api import MAX_USAGE_PAGE, UsageReportRequest
from lexora_gateway.account.callers import AnyCaller, identity_of
from lexora_gateway.admission import limits, rate_limits
from lexora_gateway.admission.identity import CurrentIdentity
from lexora_gateway.http import JSONBody
from lexora_gateway.state import GatewayState, StateDep

router = APIRouter()
PLAN_TIERS = {"free": 0, "pro": 1, "enterprise": 2}
MAX_LIMIT = 100


def usd(pico: int) -> float:
    return round(pico / 10**12, 6)


def micro_usd(micro: int) -> float:
    return round(micro / MICRO_PER_USD, 6)


def iso(moment: datetime) -> str:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _date_param(request: Request, name: str) -> date | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise InvalidRequest(f"'{name}' must be an ISO 8601 date such as 2026-03-01", param=name) from None


def _int_param(request: Request, name: str, default: int, low: int, high: int | None = None) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be a whole number", param=name) from None
    if number < low or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidRequest(f"'{name}' must be {bounds}", param=name)
    return number


async def _free_model_limit(state: GatewayState, identity: Identity, now: datetime) -> dict[str, Any]:
    allowance = rate_limits.plan_of(state, identity).free_model_requests_per_day
    counter = await state.counters.read(f"acct.{identity.account_id}")
    used = limits.free_model_usage(counter, now, identity.timezone)
    return {
        "limit": allowance,
        "used": used,
        "remaining": None if allowance is None else max(allowance - used, 0),
        "resets_at": iso(limits.next_midnight(now, identity.timezone)),
        "timezone": identity.timezone,
    }


def _model_param(request: Request) -> str | None:
    """The `model` filter as usage records hold names: NUL, which Postgres cannot take, as U+FFFD
    (lexora_usage.recorder.storable_model), so such a filter is an empty page, not a 500."""
    model = request.query_params.get("model")
    return None if model is None else model.replace("\x00", "\ufffd")


@router.get("/usage")
async def usage(request: Request, caller: AnyCaller, state: StateDep) -> Response:
    """An API key's account, or the signed-in user's (the console's Usage page)."""
    identity = identity_of(caller)
    start, end = _date_param(request, "start_date"), _date_param(request, "end_date")
    if start and end and end < start:
        raise InvalidRequest("'end_date' is before 'start_date'", param="end_date")
    page_size = _int_param(request, "limit", 50, 1, MAX_LIMIT)
    page = _int_param(request, "page", 1, 1, MAX_USAGE_PAGE)
    now = datetime.now(UTC)
    report = await state.usage.report(
        UsageReportRequest(
            account_id=identity.account_id,
            start=datetime.combine(start, time(), UTC) if start else None,
            end=datetime.combine(end + timedelta(days=1), time(), UTC) if end else None,  # end_date is inclusive
            model=_model_param(request),
            limit=page_size,
            page=page,
            today=now.date(),
        )
    )
    balance = await state.billing.balance(identity.account_id)
    summary = report.summary
    return JSONBody(
        {
            "object": "usage",
            "account": {
                "credits_remaining": round(balance.exact_balance_pico / 10**6 / MICRO_PER_CREDIT, 6),
                "vip_tier": PLAN_TIERS.get(identity.plan, 0),
            },
            "free_model_daily_limit": await _free_model_limit(state, identity, now),
            "summary": {
                "total_requests": summary.requests,
                "total_prompt_tokens": summary.prompt_tokens,
                "total_completion_tokens": summary.completion_tokens,
                "total_tokens": summary.prompt_tokens + summary.completion_tokens,
                "total_cost": usd(summary.cost_pico),
                "avg_latency_ms": summary.avg_latency_ms,
            },
            "daily": [
                {"date": d.date.isoformat(), "requests": d.requests, "tokens": d.tokens, "cost": usd(d.cost_pico)}
                for d in sorted(report.daily, key=lambda d: d.date)
            ],
            "by_model": [
                {"model_id": m.model, "requests": m.requests, "tokens": m.tokens, "cost": usd(m.cost_pico)}
                for m in report.by_model
            ],
            "recent_activity": [
                {
                    "id": a.request_id,
                    "model_id": a.model,
                    "prompt_tokens": a.prompt_tokens,
                    "completion_tokens": a.completion_tokens,
                    "total_tokens": a.prompt_tokens + a.completion_tokens,
                    "cost": usd(a.cost_pico),
                    "latency_ms": a.latency_ms,
                    "status_code": a.status_code,
                    "thinking_used": a.thinking_used,
                    "created_at": iso(a.created_at),
                }
                for a in report.recent
            ],
            "pagination": {
                "page": page,
                "limit": page_size,
                "total": report.total_recent,
                "total_pages": math.ceil(report.total_recent / page_size),
            },
        }
    )


@router.get("/key")
async def current_key(request: Request, identity: CurrentIdentity, state: StateDep) -> Response:
    spend = await state.billing.key_spend(identity.key_id)
    keys = await state.auth.list_keys(identity.account_id)
    key = next((k for k in keys.keys if k.key_id == identity.key_id), None)
    plan = rate_limits.plan_of(state, identity)
    limit = identity.spend_limit_micro
    return JSONBody(
        {
            "data": {
                "label": (key.name or key.display_prefix) if key else identity.key_id,
                "usage": micro_usd(spend.spent_micro),
                "limit": None if limit is None else micro_usd(limit),
                "limit_remaining": None if limit is None else micro_usd(max(limit - spend.spent_micro, 0)),
                "is_free_tier": identity.plan == "free",
                "plan": identity.plan,
                "rate_limit": {"requests": plan.requests_per_minute, "interval": "1m"},
                "daily_request_limit": plan.requests_per_day,
                "free_model_daily_limit": await _free_model_limit(state, identity, datetime.now(UTC)),
            }
        }
    )


@router.get("/credits")
async def credits(request: Request, identity: CurrentIdentity, state: StateDep) -> Response:
    summary = await state.billing.credits_summary(identity.account_id)
    return JSONBody(
        {"data": {"total_credits": micro_usd(summary.credited_micro), "total_usage": micro_usd(summary.charged_micro)}}
    )
