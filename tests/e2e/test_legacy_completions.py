"""The legacy /v1/completions endpoint through the OpenAI SDK: a raw prompt, no chat template."""

from __future__ import annotations

import openai

from lexora_contracts.money import request_cost_pico
from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack

PROMPT = "The capital of France is"


def sdk(lexora: RunningStack, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=lexora.base_url, api_key=api_key, max_retries=0)


def test_completion_continues_the_raw_prompt_and_is_charged(lexora: RunningStack) -> None:
    account = lexora.create_account()
    reply = sdk(lexora, account.api_key).completions.create(
        model=LOCAL_CHAT_MODEL, prompt=PROMPT, max_tokens=8, temperature=0
    )
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert reply.choices[0].text.strip() and reply.choices[0].finish_reason in ("stop", "length")
    chat = sdk(lexora, account.api_key).chat.completions.create(
        model=LOCAL_CHAT_MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=1
    )
    assert reply.usage.prompt_tokens < chat.usage.prompt_tokens, "no chat template around a raw prompt"
    [row] = [r for r in lexora.wait_for_usage_rows(account.account_id, 2) if r["request_id"] == reply.id]
    assert row["endpoint"] == "/v1/completions"
    assert row["cost_pico"] == request_cost_pico(
        reply.usage.prompt_tokens, reply.usage.completion_tokens, 40_000, 40_000
    )


def test_streamed_completion_matches_the_whole_one(lexora: RunningStack) -> None:
    account = lexora.create_account()
    client = sdk(lexora, account.api_key)
    args = {"model": LOCAL_CHAT_MODEL, "prompt": [PROMPT], "max_tokens": 10, "temperature": 0}
    whole = client.completions.create(**args).choices[0].text
    chunks = list(client.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert chunks[-1].usage.completion_tokens > 0 and chunks[-1].choices == []
