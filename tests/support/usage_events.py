"""A small, valid usage event for tests of the usage stream and its consumers."""

from __future__ import annotations

from lexora_contracts.messages import UsageEvent


def usage_event(request_id: str, account_id: str = "acct_test") -> UsageEvent:
    """A 200 that used one token each way and cost one pico-dollar."""
    return UsageEvent(
        request_id=request_id,
        account_id=account_id,
        key_id="key_test",
        model="test/model",
        status_code=200,
        prompt_tokens=1,
        completion_tokens=1,
        cost_pico=1,
        received_at=1_767_225_600,
        latency_ms=1,
    )
