"""Limits coding agents can live with, through the official SDKs on the real stack: a max_tokens
past what the context still holds is clamped and said so (x-lexora-max-tokens-clamped), a prompt
past the context is the protocol's own 400, never charged; names agents ask for resolve by the
platform's patterns (LEXORA_MODEL_ALIASES, set by the test stack)."""

from __future__ import annotations

import re

import anthropic
import openai
import pytest

from lexora_contracts.money import request_cost_pico
from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack

PRICE = 40_000  # micro-USD per 1M tokens, input and output, for the local model
CONTEXT = 8192
HEADER = "x-lexora-max-tokens-clamped"
HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]
# Well past 8,192 tokens by the model's own tokenizer (each " lorem" is at least one token).
TOO_LONG = [{"role": "user", "content": "lorem " * 12_000}]
GREEDY = {"temperature": 0}


def anthropic_client(lexora: RunningStack, api_key: str) -> anthropic.Anthropic:
    root = lexora.base_url.removesuffix("/v1")
    return anthropic.Anthropic(base_url=f"{root}/api/", api_key=api_key, max_retries=0)


def openai_client(lexora: RunningStack, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=lexora.base_url, api_key=api_key, max_retries=0)


def _charged_exactly(lexora: RunningStack, account_id: str, request_id: str, prompt: int, output: int) -> None:
    cost = request_cost_pico(prompt, output, PRICE, PRICE)
    [row] = lexora.wait_for_usage_rows(account_id, 1)
    assert (row["request_id"], row["model"], row["status_code"]) == (request_id, LOCAL_CHAT_MODEL, 200)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_pico"]) == (prompt, output, cost)
    assert lexora.settled_balance(account_id).held_micro == 0
    lexora.assert_ledger_consistent(account_id)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_anthropic_max_tokens_32000_is_clamped_and_said_so(lexora: RunningStack, stream: bool) -> None:
    account = lexora.create_account()
    sdk = anthropic_client(lexora, account.api_key)
    # An explicit timeout: without one the SDK refuses a non-streaming max_tokens this large itself.
    args = {"model": LOCAL_CHAT_MODEL, "max_tokens": 32000, "messages": HELLO, "extra_body": GREEDY, "timeout": 300}
    if stream:
        with sdk.messages.with_streaming_response.create(stream=True, **args) as raw:
            headers = raw.headers
            events = list(raw.parse())
        message = next(e.message for e in events if e.type == "message_start")
        output = [e for e in events if e.type == "message_delta"][-1].usage.output_tokens
        prompt = message.usage.input_tokens
    else:
        raw = sdk.messages.with_raw_response.create(**args)
        headers, message = raw.headers, raw.parse()
        prompt, output = message.usage.input_tokens, message.usage.output_tokens
        assert message.content[0].text.strip()
        assert message.usage.model_extra["cost"] == pytest.approx(
            request_cost_pico(prompt, output, PRICE, PRICE) / 1e12, rel=1e-12
        )
    assert raw.status_code == 200
    assert int(headers[HEADER]) == CONTEXT - prompt, "the max_tokens the job ran with: what the prompt left"
    assert 0 < output <= CONTEXT - prompt
    _charged_exactly(lexora, account.account_id, message.id, prompt, output)


def test_openai_max_tokens_32000_is_clamped_and_said_so(lexora: RunningStack) -> None:
    account = lexora.create_account()
    raw = openai_client(lexora, account.api_key).chat.completions.with_raw_response.create(
        model=LOCAL_CHAT_MODEL, messages=HELLO, max_tokens=32000, temperature=0
    )
    completion = raw.parse()
    usage = completion.usage
    assert raw.status_code == 200 and completion.choices[0].message.content.strip()
    assert int(raw.headers[HEADER]) == CONTEXT - usage.prompt_tokens
    _charged_exactly(lexora, account.account_id, completion.id, usage.prompt_tokens, usage.completion_tokens)


def test_a_max_tokens_that_fits_gets_no_header(lexora: RunningStack) -> None:
    account = lexora.create_account()
    raw = anthropic_client(lexora, account.api_key).messages.with_raw_response.create(
        model=LOCAL_CHAT_MODEL, max_tokens=8, messages=HELLO
    )
    assert raw.status_code == 200 and HEADER not in raw.headers


def _refused_at_no_cost(lexora: RunningStack, account_id: str, before: int) -> None:
    [row] = lexora.wait_for_usage_rows(account_id, 1)
    assert (row["status_code"], row["cost_pico"], row["completion_tokens"]) == (400, 0, 0)
    after = lexora.settled_balance(account_id)
    assert (after.balance_micro, after.held_micro) == (before, 0), "a refused prompt costs nothing"
    lexora.assert_ledger_consistent(account_id)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_anthropic_prompt_too_long_is_anthropics_400(lexora: RunningStack, stream: bool) -> None:
    account = lexora.create_account()
    before = lexora.balance(account.account_id).balance_micro
    sdk = anthropic_client(lexora, account.api_key)
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(model=LOCAL_CHAT_MODEL, max_tokens=32000, messages=TOO_LONG, stream=stream, timeout=300)
    assert caught.value.status_code == 400
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error"
    found = re.fullmatch(r"prompt is too long: (\d+) tokens > (\d+) maximum", error["message"])
    assert found, error["message"]
    assert int(found[1]) > CONTEXT and int(found[2]) == CONTEXT - 1
    _refused_at_no_cost(lexora, account.account_id, before)


def test_openai_prompt_too_long_is_context_length_exceeded(lexora: RunningStack) -> None:
    account = lexora.create_account()
    before = lexora.balance(account.account_id).balance_micro
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(lexora, account.api_key).chat.completions.create(
            model=LOCAL_CHAT_MODEL, messages=TOO_LONG, max_tokens=100, stream=True
        )
    assert caught.value.status_code == 400 and caught.value.code == "context_length_exceeded"
    assert caught.value.type == "invalid_request_error"
    assert re.match(
        rf"This model's maximum context length is {CONTEXT} tokens\. However, your messages resulted in \d+ tokens\.",
        caught.value.body["message"],
    ), caught.value.body
    _refused_at_no_cost(lexora, account.account_id, before)


def test_a_claude_name_is_served_by_the_pattern_and_charged_at_its_price(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = anthropic_client(lexora, account.api_key)
    name = "claude-3-5-haiku-20241022"
    counted = sdk.messages.count_tokens(model=name, messages=HELLO).input_tokens
    message = sdk.messages.create(model=name, max_tokens=16, messages=HELLO, extra_body=GREEDY)
    assert message.usage.input_tokens == counted
    assert message.content[0].text.strip()
    _charged_exactly(lexora, account.account_id, message.id, message.usage.input_tokens, message.usage.output_tokens)
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.create(model="claude-sonnet-4-5", max_tokens=4, messages=HELLO)
    card = openai_client(lexora, account.api_key).models.retrieve(name)
    assert card.id == LOCAL_CHAT_MODEL, "the model card shows the model the name means"


def test_responses_api_max_output_tokens_is_clamped_too(lexora: RunningStack) -> None:
    account = lexora.create_account()
    raw = openai_client(lexora, account.api_key).responses.with_raw_response.create(
        model=LOCAL_CHAT_MODEL, input="Say hello in one short sentence.", max_output_tokens=32000, temperature=0
    )
    response = raw.parse()
    assert raw.status_code == 200 and response.output_text.strip()
    assert int(raw.headers[HEADER]) == CONTEXT - response.usage.input_tokens
    _charged_exactly(lexora, account.account_id, response.id, response.usage.input_tokens, response.usage.output_tokens)
