"""Applies the plan limits at the edge: counters shared by all gateway replicas in NATS KV."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Request

from lexora_contracts.errors import RateLimitExceeded
from lexora_contracts.messages import Identity
from lexora_contracts.plans import PlanLimits
from lexora_contracts.registry import ModelRecord
from lexora_gateway.admission import limits
from lexora_gateway.state import GatewayState

SCOPE_KEY = "lexora.ratelimit"


def plan_of(state: GatewayState, identity: Identity) -> PlanLimits:
    """The caller's plan limits (gateway settings; an unknown plan has none)."""
    return state.settings.plans.get(identity.plan) or PlanLimits()


def _remember(request: Request, admission: limits.Admission) -> None:
    # Read by the edge middleware, which puts the X-RateLimit-* headers on whatever response goes out.
    request.scope[SCOPE_KEY] = admission.headers()


async def admit(request: Request, state: GatewayState, identity: Identity, model: ModelRecord) -> None:
    """Count an inference request; 429 with Retry-After when a limit is reached."""
    plan = plan_of(state, identity)
    now = datetime.now(UTC)
    if plan.requests_per_minute is None and plan.requests_per_day is None:
        # Nothing to count against: no shared counter round trip, and no contention on hot keys.
        _remember(request, limits.Admission(None, None, (int(now.timestamp()) // 60 + 1) * 60))
    else:
        await _count_key(request, state, identity, plan, now)
    if model.pricing_at(now).is_free and plan.free_model_requests_per_day is not None:
        await state.counters.apply(
            f"acct.{identity.account_id}",
            lambda s: (limits.admit_free_model(s, plan, now, identity.timezone), None),
        )


async def _count_key(
    request: Request, state: GatewayState, identity: Identity, plan: PlanLimits, now: datetime
) -> None:
    key_counter = f"key.{identity.key_id}"
    try:
        admission = await state.counters.apply(key_counter, lambda s: limits.admit_key(s, plan, now, identity.timezone))
    except RateLimitExceeded:
        _remember(request, limits.peek_key(await state.counters.read(key_counter), plan, now))
        raise
    _remember(request, admission)


async def peek_headers(state: GatewayState, identity: Identity) -> dict[str, str]:
    """The X-RateLimit-* headers of a response that did not count against the limits (the edge
    middleware puts them on every authenticated response that has none)."""
    plan = plan_of(state, identity)
    return limits.peek_key(await state.counters.read(f"key.{identity.key_id}"), plan, datetime.now(UTC)).headers()
