"""Reasoning parameters through the real SDKs on the local model, which has no reasoning: valid
ones are accepted and change nothing; invalid ones are a 400 naming the parameter, charged nothing."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
CREDIT = 5_000_000


def sdk(lexora: RunningStack, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=lexora.base_url, api_key=api_key, max_retries=0)


def test_reasoning_parameters_are_accepted_and_ignored_by_a_model_without_reasoning(lexora: RunningStack) -> None:
    account = lexora.create_account()
    client = sdk(lexora, account.api_key)
    args: dict[str, Any] = {"model": LOCAL_CHAT_MODEL, "messages": QUESTION, "max_tokens": 12, "temperature": 0}
    plain = client.chat.completions.create(**args)
    asked = client.chat.completions.create(
        **args, reasoning_effort="high", extra_body={"reasoning": {"effort": "high", "max_tokens": 8}}
    )
    message = asked.choices[0].message
    assert message.content == plain.choices[0].message.content, "the model answers as it would without"
    assert "reasoning" not in (message.model_extra or {}) and "reasoning_content" not in (message.model_extra or {})
    assert asked.usage.completion_tokens_details is None
    rows = lexora.wait_for_usage_rows(account.account_id, 2)
    assert [(r["status_code"], r["thinking_used"]) for r in rows] == [(200, False), (200, False)]


def test_streamed_answer_with_reasoning_enabled_has_no_reasoning_deltas(lexora: RunningStack) -> None:
    account = lexora.create_account()
    chunks = list(
        sdk(lexora, account.api_key).chat.completions.create(
            model=LOCAL_CHAT_MODEL,
            messages=QUESTION,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"reasoning": {"enabled": True, "exclude": False}},
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas).strip()
    assert not any((d.model_extra or {}).get("reasoning") for d in deltas)
    assert chunks[-1].usage.completion_tokens > 0


def test_anthropic_thinking_streams_text_only_on_a_model_without_reasoning(lexora: RunningStack) -> None:
    account = lexora.create_account()
    client = anthropic.Anthropic(base_url=lexora.base_url.removesuffix("/v1"), api_key=account.api_key, max_retries=0)
    with client.messages.stream(
        model=LOCAL_CHAT_MODEL,
        max_tokens=16,
        thinking={"type": "enabled", "budget_tokens": 8},
        messages=QUESTION,
    ) as stream:
        message = stream.get_final_message()
    assert [block.type for block in message.content] == ["text"]
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    assert not row["thinking_used"]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"extra_body": {"reasoning": {"effort": "maximum"}}}, "reasoning.effort"),
        ({"reasoning_effort": "low", "extra_body": {"reasoning": {"effort": "high"}}}, "reasoning_effort"),
        ({"extra_body": {"reasoning": {"max_tokens": -1}}}, "reasoning.max_tokens"),
        ({"extra_body": {"reasoning": {"max_tokens": "8"}}}, "reasoning.max_tokens"),
        ({"extra_body": {"reasoning": {"enabled": "yes"}}}, "reasoning.enabled"),
        ({"extra_body": {"reasoning": {"exclude": 1}}}, "reasoning.exclude"),
        ({"extra_body": {"reasoning": "high"}}, "reasoning"),
        ({"extra_body": {"reasoning": {"enabled": False, "effort": "low"}}}, "reasoning.enabled"),
        ({"stream": True, "extra_body": {"reasoning": {"effort": "none"}}}, "reasoning.effort"),
    ],
)
def test_bad_reasoning_parameters_are_400_naming_the_param_and_cost_nothing(
    lexora: RunningStack, params: dict[str, Any], param: str
) -> None:
    account = lexora.create_account(credits_micro=CREDIT)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(lexora, account.api_key).chat.completions.create(model=LOCAL_CHAT_MODEL, messages=QUESTION, **params)
    assert caught.value.body["param"] == param
    assert param in caught.value.body["message"]
    balance = lexora.settled_balance(account.account_id)
    assert (balance.balance_micro, balance.held_micro) == (CREDIT, 0)
    assert lexora.ledger_charges(account.account_id) == []


@pytest.mark.parametrize(
    "thinking",
    [
        {"type": "enabled", "budget_tokens": 64},  # not below max_tokens
        {"type": "sometimes"},
        {"type": "enabled", "budget_tokens": 0},
    ],
)
def test_bad_anthropic_thinking_is_400_and_costs_nothing(lexora: RunningStack, thinking: dict[str, Any]) -> None:
    account = lexora.create_account(credits_micro=CREDIT)
    client = anthropic.Anthropic(base_url=lexora.base_url.removesuffix("/v1"), api_key=account.api_key, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=LOCAL_CHAT_MODEL, max_tokens=64, thinking=thinking, messages=QUESTION)
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert "thinking" in caught.value.body["error"]["message"]
    balance = lexora.settled_balance(account.account_id)
    assert (balance.balance_micro, balance.held_micro) == (CREDIT, 0)
    assert lexora.ledger_charges(account.account_id) == []
