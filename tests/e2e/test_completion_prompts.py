"""Legacy /v1/completions with a list of prompts, through the OpenAI SDK: one choice per prompt,
each prompt its own job, usage record and charge; all or nothing when a prompt cannot run."""

from __future__ import annotations

from collections import defaultdict

import openai
import pytest

from lexora_contracts.money import pico_to_usd, request_cost_pico
from lexora_contracts.registry import Endpoint
from lexora_dev.catalog import LOCAL_CHAT_MODEL, local_catalog
from lexora_gateway.chat import jobs
from lexora_gateway.openai import translation
from lexora_gateway.openai.schemas import CompletionRequest
from support.stack import RunningStack

PROMPTS = ["The capital of France is", "Once upon a time", "1, 2, 3,"]
PRICE = 40_000  # the local model's micro-USD per 1M tokens, input and output


def sdk(lexora: RunningStack, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=lexora.base_url, api_key=api_key, max_retries=0, timeout=120)


def assert_charged_per_prompt(lexora: RunningStack, account_id: str, request_id: str, count: int) -> list[dict]:
    """One usage record and one exact charge per prompt, under `<id>-<i>`; the ledger adds up."""
    rows = lexora.wait_for_usage_rows(account_id, count)
    assert sorted(r["request_id"] for r in rows) == [f"{request_id}-{i}" for i in range(count)]
    for row in rows:
        assert row["status_code"] == 200 and row["endpoint"] == "/v1/completions"
        assert row["cost_pico"] == request_cost_pico(row["prompt_tokens"], row["completion_tokens"], PRICE, PRICE)
    balance = lexora.settled_balance(account_id)
    assert balance.held_micro == 0
    charges = {c["idempotency_key"]: c["cost_pico"] for c in lexora.ledger_charges(account_id)}
    assert charges == {f"charge:{r['request_id']}": r["cost_pico"] for r in rows}
    lexora.assert_ledger_consistent(account_id)
    return sorted(rows, key=lambda r: r["request_id"])


def test_each_prompt_is_its_own_choice_and_charge(lexora: RunningStack) -> None:
    account = lexora.create_account()
    client = sdk(lexora, account.api_key)
    reply = client.completions.create(model=LOCAL_CHAT_MODEL, prompt=PROMPTS, max_tokens=6, temperature=0)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    for choice, prompt in zip(reply.choices, PROMPTS, strict=True):
        alone = client.completions.create(model=LOCAL_CHAT_MODEL, prompt=prompt, max_tokens=6, temperature=0)
        assert choice.text == alone.choices[0].text, "the same answer as the prompt sent alone"
        assert choice.finish_reason in ("stop", "length")
    rows = [r for r in lexora.wait_for_usage_rows(account.account_id, 6) if r["request_id"].startswith(reply.id)]
    assert sum(r["prompt_tokens"] for r in rows) == reply.usage.prompt_tokens
    assert sum(r["completion_tokens"] for r in rows) == reply.usage.completion_tokens
    assert reply.usage.model_extra["cost"] == pico_to_usd(sum(r["cost_pico"] for r in rows))
    assert sorted(r["request_id"] for r in rows) == [f"{reply.id}-{i}" for i in range(3)]
    lexora.assert_ledger_consistent(account.account_id)


def test_streamed_prompts_interleave_by_choice_index_and_end_once(lexora: RunningStack) -> None:
    account = lexora.create_account()
    client = sdk(lexora, account.api_key)
    args = {"model": LOCAL_CHAT_MODEL, "prompt": PROMPTS[:2], "max_tokens": 8, "temperature": 0}
    whole = client.completions.create(**args)
    chunks = list(client.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    texts: dict[int, str] = defaultdict(str)
    finished = []
    for chunk in chunks[:-1]:
        [choice] = chunk.choices
        texts[choice.index] += choice.text
        if choice.finish_reason:
            finished.append(choice.index)
    assert sorted(finished) == [0, 1]
    assert [texts[0], texts[1]] == [c.text for c in whole.choices]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens == whole.usage.completion_tokens
    streamed = [
        r for r in lexora.wait_for_usage_rows(account.account_id, 4) if r["request_id"].startswith(chunks[0].id)
    ]
    assert len(streamed) == 2 and all(r["stream"] for r in streamed)
    assert pico_to_usd(sum(r["cost_pico"] for r in streamed)) == usage.model_extra["cost"]
    lexora.assert_ledger_consistent(account.account_id)


def test_charges_are_exactly_once_per_prompt(lexora: RunningStack) -> None:
    account = lexora.create_account()
    reply = sdk(lexora, account.api_key).completions.create(
        model=LOCAL_CHAT_MODEL, prompt=PROMPTS, max_tokens=4, temperature=0
    )
    assert_charged_per_prompt(lexora, account.account_id, reply.id, len(PROMPTS))


def test_when_one_prompt_cannot_be_held_nothing_runs_and_nothing_is_charged(lexora: RunningStack) -> None:
    model = local_catalog(Endpoint(name="nowhere", grpc_address="127.0.0.1:1"))[0]
    job = translation.completion_to_job(CompletionRequest(model=model.id, prompt=PROMPTS[0], max_tokens=8))
    hold = jobs.reservation_micro(job, model, model.pricing, 8)
    credit = 2 * hold + hold // 2  # room for two prompts' holds, not three
    account = lexora.create_account(credits_micro=credit)
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(lexora, account.api_key).completions.create(
            model=LOCAL_CHAT_MODEL, prompt=[PROMPTS[0]] * 3, max_tokens=8, temperature=0
        )
    assert caught.value.status_code == 402
    rows = lexora.wait_for_usage_rows(account.account_id, 3)
    assert [(r["status_code"], r["cost_pico"], r["completion_tokens"]) for r in rows] == [(402, 0, 0)] * 3
    balance = lexora.settled_balance(account.account_id)
    assert (balance.balance_micro, balance.held_micro) == (credit, 0), "holds released, nothing charged"
    assert lexora.ledger_charges(account.account_id) == []
    lexora.assert_ledger_consistent(account.account_id)


def test_a_prompt_the_engine_rejects_fails_the_request_and_is_not_charged(lexora: RunningStack) -> None:
    account = lexora.create_account()
    too_long = "hello " * 8300  # over the local model's 8192-token context
    with pytest.raises(openai.BadRequestError):
        sdk(lexora, account.api_key).completions.create(
            model=LOCAL_CHAT_MODEL, prompt=["Say hi", too_long], max_tokens=16, temperature=0
        )
    rows = {r["request_id"][-2:]: r for r in lexora.wait_for_usage_rows(account.account_id, 2)}
    assert (rows["-1"]["status_code"], rows["-1"]["cost_pico"]) == (400, 0), "the failed prompt costs nothing"
    # The other prompt was stopped (499) or had already finished (200): charged for what it produced.
    other = rows["-0"]
    assert other["status_code"] in (200, 499)
    assert other["cost_pico"] == request_cost_pico(other["prompt_tokens"], other["completion_tokens"], PRICE, PRICE)
    assert lexora.settled_balance(account.account_id).held_micro == 0
    charged = sum(c["cost_pico"] for c in lexora.ledger_charges(account.account_id))
    assert charged == other["cost_pico"]
    lexora.assert_ledger_consistent(account.account_id)


@pytest.mark.parametrize("prompt", [[1, 2, 3], [[1, 2], [3, 4]]])
def test_token_id_prompts_are_refused_clearly(lexora: RunningStack, prompt: list) -> None:
    account = lexora.create_account()
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(lexora, account.api_key).completions.create(model=LOCAL_CHAT_MODEL, prompt=prompt, max_tokens=4)
    assert caught.value.body["param"] == "prompt" and "token ids" in caught.value.body["message"]


def test_too_many_prompts_are_refused_with_the_cap(lexora: RunningStack) -> None:
    account = lexora.create_account()
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(lexora, account.api_key).completions.create(model=LOCAL_CHAT_MODEL, prompt=["a"] * 17, max_tokens=4)
    assert caught.value.body["param"] == "prompt" and "At most 16 prompts" in caught.value.body["message"]
    assert lexora.ledger_charges(account.account_id) == []
