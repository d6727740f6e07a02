"""A max_tokens past the context is clamped (and said so); a prompt past it is the protocol's error."""

from __future__ import annotations

from lexora_contracts.errors import ContextLengthExceeded, InvalidRequest, error_from_info
from lexora_contracts.messages import ChatTurn, GenerationChunk
from lexora_contracts.money import request_cost_pico
from lexora_contracts.registry import ModelRecord, Pricing
from lexora_gateway.chat.jobs import (
    MAX_TOKENS_CLAMPED_HEADER,
    ChatJob,
    max_tokens_headers,
    reservation_micro,
    resolve_max_tokens,
)
from lexora_gateway.errors import anthropic_error_body, openai_error_body
from lexora_router.generation import clamped_max_tokens

CONTEXT = 8192
MODEL = ModelRecord(
    id="acme/tiny",
    triton_model="tiny",
    context_length=8192,
    pricing=Pricing(input_micro_per_mtok=40_000, output_micro_per_mtok=40_000),
)


def _job(max_tokens: int | None) -> ChatJob:
    return ChatJob(
        model=MODEL.id,
        messages=[ChatTurn(role="user", content="hi")],
        max_tokens=max_tokens,
        temperature=0.7,
        top_p=1.0,
        stream=False,
        endpoint="/v1/messages",
    )


def test_max_tokens_past_the_context_is_clamped_to_it_not_refused() -> None:
    assert resolve_max_tokens(_job(32000), MODEL) == 8192
    assert resolve_max_tokens(_job(100), MODEL) == 100
    assert resolve_max_tokens(_job(None), MODEL) == 512


def test_the_hold_covers_the_clamped_bound() -> None:
    job = _job(32000)
    held = reservation_micro(job, MODEL, MODEL.pricing, resolve_max_tokens(job, MODEL))
    # The engine can produce at most the whole context after a prompt of at least one token.
    worst_pico = request_cost_pico(1, CONTEXT - 1, 40_000, 40_000)
    assert held * 1_000_000 >= worst_pico


def test_router_reports_the_room_the_prompt_leaves() -> None:
    assert clamped_max_tokens(8192, 8192, 48) == 8144
    assert clamped_max_tokens(100, 8192, 48) is None
    assert clamped_max_tokens(8144, 8192, 48) is None
    assert clamped_max_tokens(100, 0, 48) is None  # no record: nothing to say


def test_header_says_the_max_tokens_the_job_runs_with() -> None:
    class Sent:
        max_tokens = 8192

    assert max_tokens_headers(_job(32000), Sent(), GenerationChunk(kind="delta", max_tokens=8144)) == {
        MAX_TOKENS_CLAMPED_HEADER: "8144"
    }
    assert max_tokens_headers(_job(32000), Sent(), GenerationChunk(kind="done")) == {MAX_TOKENS_CLAMPED_HEADER: "8192"}
    Sent.max_tokens = 100
    assert max_tokens_headers(_job(100), Sent(), GenerationChunk(kind="done")) == {}
    assert max_tokens_headers(_job(None), Sent(), GenerationChunk(kind="done", max_tokens=50)) == {}


def test_a_prompt_too_long_speaks_each_protocol() -> None:
    error = ContextLengthExceeded.from_engine("prompt is too long: 12000 tokens > 8191 maximum")
    assert isinstance(error, InvalidRequest) and error.status == 400
    rebuilt = error_from_info(error.info())  # as it crosses NATS
    assert isinstance(rebuilt, ContextLengthExceeded)
    assert anthropic_error_body(rebuilt) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long: 12000 tokens > 8191 maximum"},
    }
    body = openai_error_body(rebuilt)["error"]
    assert body["code"] == "context_length_exceeded" and body["type"] == "invalid_request_error"
    assert body["message"].startswith(
        "This model's maximum context length is 8192 tokens. However, your messages resulted in 12000 tokens."
    )


def test_other_engine_refusals_are_not_context_errors() -> None:
    assert ContextLengthExceeded.from_engine("top_p must be in (0, 1]") is None
