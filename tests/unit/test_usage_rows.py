"""Usage records from a batch of usage events: each request once, its row as the column holds it."""

from __future__ import annotations

from datetime import UTC, datetime

from lexora_contracts.messages import UsageEvent
from lexora_usage.recorder import MODEL_CHARS, first_of_each_request, storable_model, usage_row

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def event(request_id: str, latency_ms: int = 1, model: str = "m") -> UsageEvent:
    return UsageEvent(
        request_id=request_id,
        account_id="a",
        key_id="k",
        model=model,
        status_code=200,
        prompt_tokens=3,
        completion_tokens=5,
        cost_pico=7,
        received_at=1_767_225_600.25,
        latency_ms=latency_ms,
    )


def test_each_request_once_the_first_event_wins_in_batch_order() -> None:
    first_a, b, replay_a, c, replay_b = event("a", 1), event("b"), event("a", 99), event("c"), event("b", 99)
    assert first_of_each_request([first_a, b, replay_a, c, replay_b]) == [first_a, b, c]
    assert first_of_each_request([first_a, b, c]) == [first_a, b, c]
    assert first_of_each_request([]) == []


def test_a_row_holds_every_column_of_the_event() -> None:
    row = usage_row(event("req_1", latency_ms=42).model_copy(update={"stream": True, "finish_reason": "stop"}), NOW)
    assert row == {
        "request_id": "req_1",
        "account_id": "a",
        "key_id": "k",
        "model": "m",
        "endpoint": "/v1/chat/completions",
        "status_code": 200,
        "error_type": None,
        "prompt_tokens": 3,
        "completion_tokens": 5,
        "cost_pico": 7,
        "finish_reason": "stop",
        "stream": True,
        "thinking_used": False,
        "received_at": datetime(2026, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC),
        "latency_ms": 42,
        "recorded_at": NOW,
    }


def test_a_model_name_the_column_cannot_hold_is_made_storable() -> None:
    sent = "a\x00b" + "x" * 500
    assert usage_row(event("r", model=sent), NOW)["model"] == storable_model(sent)
    assert storable_model(sent) == ("a\ufffdb" + "x" * 500)[:MODEL_CHARS]
    assert storable_model("meta-llama/Llama-3.2-3B-Instruct") == "meta-llama/Llama-3.2-3B-Instruct"
