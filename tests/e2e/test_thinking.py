"""Thinking through the real SDKs on a model that reasons: the local SmolLM2 made to think by budget
forcing (model-repo/smollm2-135m-think). Its thoughts are a tiny model's, but greedy and repeatable,
so the tests check the shape of the answers, the counts and the bill, not the words."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

from lexora_contracts.money import request_cost_pico
from lexora_dev.catalog import LOCAL_CHAT_MODEL, LOCAL_THINKING_MODEL
from support.stack import RunningStack

PRICE = 40_000  # micro-USD per 1M tokens, input and output, as SmolLM2
# A question the model does not finish thinking about within 8 tokens, so the budget is what ends it.
GREETING = [{"role": "user", "content": "Hello! How are you today?"}]
BUDGET = 8
THINK = {"type": "enabled", "budget_tokens": BUDGET}
GREEDY = {"temperature": 0}  # current Anthropic SDKs dropped it from create(); the API takes it


def claude(lexora: RunningStack, api_key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=lexora.base_url.removesuffix("/v1"), api_key=api_key, max_retries=0)


def gpt(lexora: RunningStack, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=lexora.base_url, api_key=api_key, max_retries=0)


def assert_billed_as_output(lexora: RunningStack, account_id: str, prompt: int, completion: int) -> None:
    """One usage record, with thinking used, costing every output token (thinking included)."""
    [row] = lexora.wait_for_usage_rows(account_id, 1)
    cost = request_cost_pico(prompt, completion, PRICE, PRICE)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_pico"]) == (prompt, completion, cost)
    assert row["thinking_used"]


# ---- Anthropic --------------------------------------------------------------------------------
def test_create_answers_with_a_thinking_block_before_the_text(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = claude(lexora, account.api_key)
    message = sdk.messages.create(
        model=LOCAL_THINKING_MODEL, max_tokens=40, thinking=THINK, messages=GREETING, extra_body=GREEDY
    )
    assert [block.type for block in message.content] == ["thinking", "text"]
    thinking, text = message.content
    assert thinking.thinking.strip() and thinking.signature
    assert text.text.strip() and "<think>" not in text.text and "</think>" not in text.text
    assert "think>" not in thinking.thinking
    # Thinking is output: more than the budget was produced before the answer's first token.
    assert BUDGET < message.usage.output_tokens <= 40
    # The prefilled "<think>" is prompt, which count_tokens counts too: this model thinks by default.
    assert (
        message.usage.input_tokens
        == sdk.messages.count_tokens(model=LOCAL_THINKING_MODEL, messages=GREETING).input_tokens
    )
    assert_billed_as_output(lexora, account.account_id, message.usage.input_tokens, message.usage.output_tokens)
    cost = request_cost_pico(message.usage.input_tokens, message.usage.output_tokens, PRICE, PRICE)
    assert message.usage.model_extra["cost"] == pytest.approx(cost / 1e12, rel=1e-12)

    report = httpx.get(f"{lexora.base_url}/usage", headers={"x-api-key": account.api_key}, timeout=10).json()
    [activity] = report["recent_activity"]
    assert (activity["id"], activity["thinking_used"], activity["completion_tokens"]) == (
        message.id,
        True,
        message.usage.output_tokens,
    )


def test_stream_sends_thinking_deltas_and_a_signature_before_the_text(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = claude(lexora, account.api_key)
    args: dict[str, Any] = {"model": LOCAL_THINKING_MODEL, "max_tokens": 40, "thinking": THINK, "messages": GREETING}
    with sdk.messages.stream(**args, extra_body=GREEDY) as stream:
        events = list(stream)
        final = stream.get_final_message()
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    kinds = [d.type for d in deltas]
    first_text = kinds.index("text_delta")
    assert kinds.count("signature_delta") == 1
    assert set(kinds[: first_text - 1]) == {"thinking_delta"} and kinds[first_text - 1] == "signature_delta"
    assert set(kinds[first_text:]) == {"text_delta"}
    assert len(kinds[: first_text - 1]) > 1, "the thinking streams as it comes"

    assert [block.type for block in final.content] == ["thinking", "text"]
    thinking, text = final.content
    assert thinking.thinking == "".join(d.thinking for d in deltas if d.type == "thinking_delta")
    assert thinking.signature == next(d.signature for d in deltas if d.type == "signature_delta")
    assert text.text == "".join(d.text for d in deltas if d.type == "text_delta")
    # The same request, not streamed, thinks and answers the same (greedy decoding).
    created = sdk.messages.create(**args, extra_body=GREEDY)
    assert (created.content[0].thinking, created.content[1].text) == (thinking.thinking, text.text)
    assert created.usage.output_tokens == final.usage.output_tokens
    rows = lexora.wait_for_usage_rows(account.account_id, 2)
    assert [(r["completion_tokens"], r["thinking_used"]) for r in rows] == [(final.usage.output_tokens, True)] * 2


def test_thinking_disabled_answers_like_the_plain_model(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = claude(lexora, account.api_key)
    args: dict[str, Any] = {"max_tokens": 24, "messages": GREETING, "extra_body": GREEDY}
    message = sdk.messages.create(model=LOCAL_THINKING_MODEL, thinking={"type": "disabled"}, **args)
    plain = sdk.messages.create(model=LOCAL_CHAT_MODEL, **args)
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == plain.content[0].text
    assert (message.usage.input_tokens, message.usage.output_tokens) == (
        plain.usage.input_tokens,
        plain.usage.output_tokens,
    )
    # Counted with thinking off, the prompt has no "<think>" prefill: the count matches the bill.
    counted = sdk.messages.count_tokens(model=LOCAL_THINKING_MODEL, thinking={"type": "disabled"}, messages=GREETING)
    thinking_on = sdk.messages.count_tokens(model=LOCAL_THINKING_MODEL, messages=GREETING)
    assert counted.input_tokens == message.usage.input_tokens < thinking_on.input_tokens
    rows = lexora.wait_for_usage_rows(account.account_id, 2)
    assert [r["thinking_used"] for r in rows] == [False, False]


# ---- OpenAI -----------------------------------------------------------------------------------
def test_openai_chat_returns_the_reasoning_apart_from_the_content(lexora: RunningStack) -> None:
    account = lexora.create_account()
    # effort "low" is 20 % of max_tokens: the same 8-token budget.
    reply = gpt(lexora, account.api_key).chat.completions.create(
        model=LOCAL_THINKING_MODEL, messages=GREETING, max_tokens=40, temperature=0, reasoning_effort="low"
    )
    message = reply.choices[0].message
    extra = message.model_extra or {}
    assert extra["reasoning"].strip() and extra["reasoning_content"] == extra["reasoning"]
    assert message.content.strip() and "think>" not in message.content and "think>" not in extra["reasoning"]
    assert BUDGET < reply.usage.completion_tokens <= 40
    assert_billed_as_output(lexora, account.account_id, reply.usage.prompt_tokens, reply.usage.completion_tokens)


def test_openai_stream_sends_reasoning_deltas_before_content(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = gpt(lexora, account.api_key)
    args: dict[str, Any] = {
        "model": LOCAL_THINKING_MODEL,
        "messages": GREETING,
        "max_tokens": 40,
        "temperature": 0,
        "extra_body": {"reasoning": {"max_tokens": BUDGET}},
    }
    chunks = list(sdk.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = [(d.model_extra or {}).get("reasoning") or "" for d in deltas]
    content = [d.content or "" for d in deltas]
    last_reasoning = max(i for i, r in enumerate(reasoning) if r)
    first_content = min(i for i, c in enumerate(content) if c)
    assert last_reasoning < first_content
    assert sum(1 for r in reasoning if r) > 1, "the reasoning streams as it comes"
    whole = sdk.chat.completions.create(**args).choices[0].message
    assert "".join(reasoning) == whole.model_extra["reasoning"]
    assert "".join(content) == whole.content
    usage = chunks[-1].usage
    # Streamed token by token, the block ends on a delta of its own, so the count is exact:
    # the budget plus the closing tag the engine wrote for the model.
    assert BUDGET < usage.completion_tokens_details.reasoning_tokens < usage.completion_tokens


def test_openai_exclude_hides_the_reasoning_but_bills_it(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = gpt(lexora, account.api_key)
    args: dict[str, Any] = {"model": LOCAL_THINKING_MODEL, "messages": GREETING, "max_tokens": 40, "temperature": 0}
    shown = sdk.chat.completions.create(**args, extra_body={"reasoning": {"max_tokens": BUDGET}})
    hidden = sdk.chat.completions.create(**args, extra_body={"reasoning": {"max_tokens": BUDGET, "exclude": True}})
    extra = hidden.choices[0].message.model_extra or {}
    assert "reasoning" not in extra and "reasoning_content" not in extra
    assert hidden.choices[0].message.content == shown.choices[0].message.content
    assert hidden.usage.completion_tokens == shown.usage.completion_tokens
    streamed = list(
        sdk.chat.completions.create(
            **args, stream=True, extra_body={"reasoning": {"max_tokens": BUDGET, "exclude": True}}
        )
    )
    deltas = [c.choices[0].delta for c in streamed if c.choices]
    assert not any((d.model_extra or {}).get("reasoning") for d in deltas)
    assert "".join(d.content or "" for d in deltas) == shown.choices[0].message.content
    rows = lexora.wait_for_usage_rows(account.account_id, 3)
    assert [r["thinking_used"] for r in rows] == [True, True, True]


def test_the_thinking_model_thinks_unless_told_otherwise(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = gpt(lexora, account.api_key)
    args: dict[str, Any] = {"model": "smollm2-think", "messages": GREETING, "max_tokens": 40, "temperature": 0}
    default = sdk.chat.completions.create(**args).choices[0].message
    off = sdk.chat.completions.create(**args, extra_body={"reasoning": {"enabled": False}}).choices[0].message
    assert (default.model_extra or {}).get("reasoning")
    assert not (off.model_extra or {}).get("reasoning") and "<think>" not in off.content
    rows = lexora.wait_for_usage_rows(account.account_id, 2)
    assert [r["thinking_used"] for r in rows] == [True, False]
