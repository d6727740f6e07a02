"""The Anthropic SDK, with only base_url and api_key changed, against the whole platform."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from lexora_contracts.money import request_cost_pico
from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack

PRICE = 40_000
HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]
# Current SDKs dropped the sampling arguments from create(); the API still takes them in the body.
GREEDY = {"temperature": 0}


def client(lexora: RunningStack, api_key: str, **kwargs: object) -> anthropic.Anthropic:
    # The base URL Claude Code users set: <gateway>/api/ reaches /api/v1/messages.
    root = lexora.base_url.removesuffix("/v1")
    return anthropic.Anthropic(base_url=f"{root}/api/", api_key=api_key, max_retries=0, **kwargs)


def test_create_returns_a_message_with_usage_and_cost(lexora: RunningStack) -> None:
    account = lexora.create_account()
    message = client(lexora, account.api_key).messages.create(
        model=LOCAL_CHAT_MODEL, max_tokens=24, messages=HELLO, extra_body=GREEDY
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 24
    cost = request_cost_pico(message.usage.input_tokens, message.usage.output_tokens, PRICE, PRICE)
    assert message.usage.model_extra["cost"] == pytest.approx(cost / 1e12, rel=1e-12)
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    assert (row["request_id"], row["endpoint"], row["cost_pico"]) == (message.id, "/v1/messages", cost)


def test_system_prompt_as_string_or_as_text_blocks(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = client(lexora, account.api_key)
    args = {"model": LOCAL_CHAT_MODEL, "max_tokens": 4, "messages": HELLO}
    as_string = sdk.messages.create(system="You are terse. Answer in French.", **args)
    as_blocks = sdk.messages.create(
        system=[{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in French."}], **args
    )
    without = sdk.messages.create(**args)

    def count(system: str) -> int:
        return sdk.messages.count_tokens(model=LOCAL_CHAT_MODEL, messages=HELLO, system=system).input_tokens

    assert as_string.usage.input_tokens == count("You are terse. Answer in French.")
    assert as_blocks.usage.input_tokens == count("You are terse.\n\nAnswer in French."), "blocks join with a blank line"
    assert without.usage.input_tokens != as_string.usage.input_tokens, "the system prompt replaces the default"


def test_stop_sequence_is_reported(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = client(lexora, account.api_key)
    args = {"model": LOCAL_CHAT_MODEL, "max_tokens": 24, "messages": HELLO, "extra_body": GREEDY}
    baseline = sdk.messages.create(**args).content[0].text
    words = baseline.split()
    assert len(words) >= 3, baseline
    stop = f" {words[1]}"
    stopped = sdk.messages.create(stop_sequences=["never-seen", stop], **args)
    assert stopped.stop_reason == "stop_sequence"
    assert stopped.stop_sequence == stop
    assert stopped.content[0].text == baseline[: baseline.index(stop)]


def test_streaming_emits_anthropic_events_in_order_on_the_wire(lexora: RunningStack) -> None:
    account = lexora.create_account()
    with httpx.stream(
        "POST",
        f"{lexora.base_url}/messages",
        headers={"x-api-key": account.api_key, "anthropic-version": "2023-06-01"},
        json={"model": LOCAL_CHAT_MODEL, "max_tokens": 16, "messages": HELLO, "stream": True, **GREEDY},
        timeout=60,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        names = [line.removeprefix("event: ") for line in response.iter_lines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"} and len(names[3:-3]) > 2


def test_streaming_through_the_sdk_helpers(lexora: RunningStack) -> None:
    account = lexora.create_account()
    with client(lexora, account.api_key).messages.stream(
        model=LOCAL_CHAT_MODEL, max_tokens=16, messages=HELLO, extra_body=GREEDY
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert events[0].type == "message_start"
    deltas = [e for e in events if e.type == "content_block_delta"]
    assert len(deltas) > 2 and all(d.delta.type == "text_delta" for d in deltas)
    assert final.content[0].text == "".join(d.delta.text for d in deltas)
    assert events[0].message.usage.input_tokens == final.usage.input_tokens > 0
    assert final.usage.output_tokens > 0
    assert final.stop_reason in ("end_turn", "max_tokens")


def test_streamed_text_matches_the_non_streamed_text(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = client(lexora, account.api_key)
    args = {"model": LOCAL_CHAT_MODEL, "max_tokens": 12, "messages": HELLO, "extra_body": GREEDY}
    with sdk.messages.stream(**args) as stream:
        streamed = stream.get_final_text()
    assert streamed == sdk.messages.create(**args).content[0].text


def test_count_tokens_matches_what_create_is_billed_for(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = client(lexora, account.api_key)
    messages = [{"role": "user", "content": "How many tokens is this?"}]
    counted = sdk.messages.count_tokens(model=LOCAL_CHAT_MODEL, messages=messages, system="Be brief.")
    created = sdk.messages.create(model=LOCAL_CHAT_MODEL, max_tokens=2, messages=messages, system="Be brief.")
    assert counted.input_tokens == created.usage.input_tokens
    assert len(lexora.wait_for_usage_rows(account.account_id, 1)) == 1, "counting is free and not recorded"


def test_multi_turn_conversation_and_thinking_on_a_model_without_it(lexora: RunningStack) -> None:
    account = lexora.create_account()
    message = client(lexora, account.api_key).messages.create(
        model="smollm2",  # an alias from the catalog
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "My name is Ada."}]},
            {"role": "assistant", "content": "Nice to meet you, Ada."},
            {"role": "user", "content": "What is my name?"},
        ],
    )
    assert [block.type for block in message.content] == ["text"], "no thinking blocks from a non-reasoning model"
    assert message.model == "smollm2"


@pytest.mark.parametrize(
    ("call", "status", "error_type"),
    [
        ({"max_tokens": 8, "model": "claude-sonnet-5-5"}, 404, "not_found_error"),
        ({"max_tokens": 8, "extra_body": {"temperature": 1.5}}, 400, "invalid_request_error"),
        ({"max_tokens": 8, "extra_body": {"top_k": -1}}, 400, "invalid_request_error"),
        ({"max_tokens": 0}, 400, "invalid_request_error"),
        ({"max_tokens": 8, "model": "meta-llama/Llama-3.2-3B-Instruct"}, 503, "overloaded_error"),
    ],
)
def test_errors_use_anthropic_types(lexora: RunningStack, call: dict, status: int, error_type: str) -> None:
    account = lexora.create_account()
    with pytest.raises(anthropic.APIStatusError) as caught:
        client(lexora, account.api_key).messages.create(**{"model": LOCAL_CHAT_MODEL, "messages": HELLO, **call})
    assert caught.value.status_code == status
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == error_type


def test_missing_max_tokens_names_the_field(lexora: RunningStack) -> None:
    account = lexora.create_account()
    response = httpx.post(
        f"{lexora.base_url}/messages",
        headers={"x-api-key": account.api_key, "anthropic-version": "2023-06-01"},
        json={"model": LOCAL_CHAT_MODEL, "messages": HELLO},
    )
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "Missing required parameter: 'max_tokens'"},
    }


def test_bad_key_and_no_credit(lexora: RunningStack) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client(lexora, "sk-lexora-wrong").messages.create(model=LOCAL_CHAT_MODEL, max_tokens=8, messages=HELLO)
    assert caught.value.body["error"]["type"] == "authentication_error"
    broke = lexora.create_account(credits_micro=0)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client(lexora, broke.api_key).messages.create(model=LOCAL_CHAT_MODEL, max_tokens=8, messages=HELLO)
    assert caught.value.status_code == 402
    assert caught.value.body["error"]["type"] == "billing_error"


def test_bearer_auth_works_too(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = anthropic.Anthropic(
        base_url=lexora.base_url.removesuffix("/v1"), auth_token=account.api_key, api_key=None, max_retries=0
    )
    assert sdk.messages.create(model=LOCAL_CHAT_MODEL, max_tokens=4, messages=HELLO).usage.output_tokens > 0


def test_error_after_streaming_began_is_an_error_event(lexora: RunningStack) -> None:
    impatient = lexora.start_gateway(job_timeout_s=5.0)
    account = lexora.create_account()
    with httpx.stream(
        "POST",
        f"{impatient}/messages",
        headers={"x-api-key": account.api_key},
        json={
            "model": LOCAL_CHAT_MODEL,
            "max_tokens": 2000,
            "stream": True,
            "temperature": 0,
            "messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
        },
        timeout=60,
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[0] == "event: message_start"
    assert "event: content_block_delta" in lines
    assert lines[-2] == "event: error"
    assert '"type": "error"' in lines[-1] and '"api_error"' in lines[-1]
    balance = lexora.settled_balance(account.account_id)
    assert balance.exact_balance_pico == 5_000_000 * 10**6, "a timed-out job is not charged"


def test_a_request_shaped_like_claude_codes_first_is_served(lexora: RunningStack) -> None:
    """What Claude Code 2.1 sends first (trimmed to fit the local model's context): the beta
    endpoint and headers, adaptive thinking, output_config, context_management, a system message
    after the user's turn, metadata, and a server tool we do not run."""
    account = lexora.create_account()
    EPHEMERAL = {"type": "ephemeral"}  # noqa: N806
    response = client(lexora, account.api_key).beta.messages.with_raw_response.create(
        model=LOCAL_CHAT_MODEL,
        max_tokens=32,
        betas=["claude-code-20250219", "interleaved-thinking-2025-05-14", "context-management-2025-06-27"],
        system=[{"type": "text", "text": "You are a coding agent.", "cache_control": EPHEMERAL}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Say hello.", "cache_control": EPHEMERAL}]},
            {"role": "system", "content": "The working directory is /tmp."},  # type: ignore[list-item]
        ],
        tools=[
            {"name": "Read", "description": "Read a file", "input_schema": {"type": "object", "properties": {}}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        ],
        metadata={"user_id": '{"device_id": "d", "session_id": "s"}'},
        stream=False,
        extra_query={"beta": "true"},  # as Claude Code's own (TypeScript) SDK sends it
        extra_body={
            "thinking": {"type": "adaptive", "display": "omitted"},
            "output_config": {"effort": "high"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            **GREEDY,
        },
    )
    assert response.http_request.url.params.get("beta") == "true"
    assert response.headers["x-lexora-ignored-tools"] == "web_search"
    message = response.parse()
    assert message.role == "assistant" and message.usage.output_tokens > 0
    assert message.stop_reason in ("end_turn", "max_tokens", "tool_use")
