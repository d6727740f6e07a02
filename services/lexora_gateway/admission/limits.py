"""Rate limits and the free-model daily limit, as pure decisions over counter state.

Counters are per API key (requests per minute and per day) and per account (free-model requests
per day). Days run midnight to midnight in the account's timezone. The state is a small dict kept
in NATS KV so every gateway replica counts against the same numbers; the caller passes the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from lexora_contracts.errors import RateLimitExceeded
from lexora_contracts.plans import PlanLimits

UNLIMITED = "unlimited"


@dataclass(frozen=True)
class Admission:
    """What the client is told in X-RateLimit-* headers (per-minute window)."""

    limit: int | None
    remaining: int | None
    reset_epoch: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": UNLIMITED if self.limit is None else str(self.limit),
            "X-RateLimit-Remaining": UNLIMITED if self.remaining is None else str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_epoch),
        }


def day_of(now: datetime, timezone: str) -> str:
    return now.astimezone(ZoneInfo(timezone)).date().isoformat()


def next_midnight(now: datetime, timezone: str) -> datetime:
    local = now.astimezone(ZoneInfo(timezone))
    tomorrow = (local + timedelta(days=1)).date()
    return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=ZoneInfo(timezone))


def _minute(now: datetime) -> int:
    return int(now.timestamp()) // 60


def admit_key(state: dict[str, Any] | None, limits: PlanLimits, now: datetime, timezone: str) -> tuple[dict, Admission]:
    """Count one request against a key's per-minute and per-day limits, or refuse it with 429.

    Returns the new counter state and what to tell the client. Raises RateLimitExceeded (with
    Retry-After) without changing the state when a limit is reached.
    """
    state = dict(state or {})
    minute, day = _minute(now), day_of(now, timezone)
    minute_count = state.get("mc", 0) if state.get("m") == minute else 0
    day_count = state.get("dc", 0) if state.get("d") == day else 0
    minute_reset = (minute + 1) * 60
    if limits.requests_per_minute is not None and minute_count >= limits.requests_per_minute:
        raise RateLimitExceeded(
            f"Rate limit of {limits.requests_per_minute} requests per minute reached; retry after the minute resets",
            retry_after=max(minute_reset - int(now.timestamp()), 1),
        )
    if limits.requests_per_day is not None and day_count >= limits.requests_per_day:
        reset = next_midnight(now, timezone)
        raise RateLimitExceeded(
            f"Daily limit of {limits.requests_per_day} requests reached; it resets at {reset.isoformat()}",
            retry_after=max(int((reset - now).total_seconds()), 1),
        )
    new_state = {"m": minute, "mc": minute_count + 1, "d": day, "dc": day_count + 1}
    remaining = None
    if limits.requests_per_minute is not None:
        remaining = limits.requests_per_minute - minute_count - 1
    return new_state, Admission(limits.requests_per_minute, remaining, minute_reset)


def peek_key(state: dict[str, Any] | None, limits: PlanLimits, now: datetime) -> Admission:
    """The headers for a request that does not count (account and catalog endpoints)."""
    minute = _minute(now)
    used = (state or {}).get("mc", 0) if (state or {}).get("m") == minute else 0
    remaining = None if limits.requests_per_minute is None else max(limits.requests_per_minute - used, 0)
    return Admission(limits.requests_per_minute, remaining, (minute + 1) * 60)


def admit_free_model(state: dict[str, Any] | None, limits: PlanLimits, now: datetime, timezone: str) -> dict:
    """Count one request to a free model against the account's daily allowance, or refuse it."""
    day = day_of(now, timezone)
    used = (state or {}).get("fc", 0) if (state or {}).get("d") == day else 0
    allowance = limits.free_model_requests_per_day
    if allowance is not None and used >= allowance:
        reset = next_midnight(now, timezone)
        raise RateLimitExceeded(
            f"Daily free limit reached ({allowance} requests to free models per day). "
            f"Add credits to use priced models, or wait for the reset at {reset.isoformat()}",
            retry_after=max(int((reset - now).total_seconds()), 1),
        )
    return {"d": day, "fc": used + 1}


def free_model_usage(state: dict[str, Any] | None, now: datetime, timezone: str) -> int:
    return (state or {}).get("fc", 0) if (state or {}).get("d") == day_of(now, timezone) else 0
