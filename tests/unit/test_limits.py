from datetime import UTC, datetime, timedelta

import pytest

from lexora_contracts.errors import RateLimitExceeded
from lexora_contracts.plans import DEFAULT_PLANS, PlanLimits
from lexora_gateway.admission import limits

FREE = DEFAULT_PLANS["free"]
NOON = datetime(2026, 3, 19, 12, 0, 5, tzinfo=UTC)


def run(n: int, plan: PlanLimits, now: datetime, tz: str = "UTC", state: dict | None = None) -> dict | None:
    for _ in range(n):
        state, _ = limits.admit_key(state, plan, now, tz)
    return state


def test_per_minute_limit_refuses_the_eleventh_request_with_retry_after() -> None:
    state = run(10, FREE, NOON)
    with pytest.raises(RateLimitExceeded) as caught:
        limits.admit_key(state, FREE, NOON, "UTC")
    assert caught.value.status == 429 and caught.value.retry_after == 55


def test_the_next_minute_starts_a_new_window() -> None:
    state = run(10, FREE, NOON)
    _, admission = limits.admit_key(state, FREE, NOON + timedelta(seconds=60), "UTC")
    assert admission.remaining == 9


def test_headers_count_down_and_name_the_reset() -> None:
    state, first = limits.admit_key(None, FREE, NOON, "UTC")
    _, second = limits.admit_key(state, FREE, NOON, "UTC")
    assert first.headers() == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "9",
        "X-RateLimit-Reset": str(int(NOON.timestamp()) - 5 + 60),
    }
    assert second.remaining == 8


def test_daily_limit_resets_at_midnight_in_the_account_timezone() -> None:
    plan = PlanLimits(requests_per_minute=1000, requests_per_day=3)
    tz = "America/New_York"  # UTC-4 in March (DST)
    before_midnight = datetime(2026, 3, 20, 3, 59, 0, tzinfo=UTC)  # 23:59 on the 19th in New York
    state = run(3, plan, before_midnight, tz)
    with pytest.raises(RateLimitExceeded) as caught:
        limits.admit_key(state, plan, before_midnight, tz)
    assert caught.value.retry_after == 60
    assert "2026-03-20T00:00:00-04:00" in caught.value.message
    after_midnight = before_midnight + timedelta(minutes=1)
    limits.admit_key(state, plan, after_midnight, tz)  # a new day in New York: allowed again
    with pytest.raises(RateLimitExceeded):  # while in UTC it is the same day all along
        limits.admit_key(run(3, plan, before_midnight, "UTC"), plan, after_midnight, "UTC")


def test_unlimited_plans_never_refuse_and_say_so() -> None:
    state = run(10_000, DEFAULT_PLANS["enterprise"], NOON)
    _, admission = limits.admit_key(state, DEFAULT_PLANS["enterprise"], NOON, "UTC")
    assert admission.headers()["X-RateLimit-Limit"] == "unlimited"


def test_free_model_allowance_per_day() -> None:
    state = None
    for _ in range(5):
        state = limits.admit_free_model(state, FREE, NOON, "UTC")
    with pytest.raises(RateLimitExceeded) as caught:
        limits.admit_free_model(state, FREE, NOON, "UTC")
    assert "Add credits" in caught.value.message and "5 requests to free models per day" in caught.value.message
    assert limits.free_model_usage(state, NOON, "UTC") == 5
    tomorrow = NOON + timedelta(days=1)
    assert limits.free_model_usage(state, tomorrow, "UTC") == 0
    assert limits.admit_free_model(state, FREE, tomorrow, "UTC") == {"d": "2026-03-20", "fc": 1}


def test_refusal_leaves_the_state_unchanged() -> None:
    state = run(10, FREE, NOON)
    with pytest.raises(RateLimitExceeded):
        limits.admit_key(state, FREE, NOON, "UTC")
    assert state["mc"] == 10
