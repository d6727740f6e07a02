"""The OpenAI SDK, with only base_url and api_key changed, against the whole platform."""

from __future__ import annotations

import httpx
import openai
import pytest

from lexora_contracts.money import pico_to_usd, request_cost_pico
from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack

PRICE = 40_000  # micro-USD per 1M tokens, input and output, for the local model
HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]


def client(lexora: RunningStack, api_key: str, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=lexora.base_url, api_key=api_key, max_retries=0, **kwargs)


def test_chat_completion_answers_with_exact_usage_and_cost(lexora: RunningStack) -> None:
    account = lexora.create_account()
    response = client(lexora, account.api_key).chat.completions.create(
        model=LOCAL_CHAT_MODEL, messages=HELLO, max_tokens=24, temperature=0
    )
    assert response.object == "chat.completion"
    assert response.id.startswith("chatcmpl-")
    assert response.model == LOCAL_CHAT_MODEL
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content.strip()
    assert response.choices[0].finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    expected_pico = request_cost_pico(usage.prompt_tokens, usage.completion_tokens, PRICE, PRICE)
    assert usage.model_extra["cost"] == pytest.approx(pico_to_usd(expected_pico), rel=1e-12)


def test_streaming_delivers_deltas_then_finish_reason_then_done(lexora: RunningStack) -> None:
    account = lexora.create_account()
    stream = client(lexora, account.api_key).chat.completions.create(
        model=LOCAL_CHAT_MODEL,
        messages=[{"role": "user", "content": "Count from one to ten in words."}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 3, "tokens arrive as separate chunks, as the model produces them"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [finishes[-1]] and finishes[-1] in ("stop", "length")
    assert chunks[0].choices[0].delta.role == "assistant"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    # A delta carries at least one token (a multi-byte character may need several).
    assert usage_chunk.usage.completion_tokens >= len(content)
    assert {c.id for c in chunks} == {chunks[0].id}


def test_stream_ends_with_done_sentinel_on_the_wire(lexora: RunningStack) -> None:
    account = lexora.create_account()
    with httpx.stream(
        "POST",
        f"{lexora.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {account.api_key}"},
        json={"model": LOCAL_CHAT_MODEL, "messages": HELLO, "max_tokens": 8, "stream": True},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert '"usage"' in events[-2] and '"finish_reason":"' in events[-2]


def test_same_answer_streaming_and_not_at_temperature_zero(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = client(lexora, account.api_key)
    args = {"model": LOCAL_CHAT_MODEL, "messages": HELLO, "max_tokens": 16, "temperature": 0}
    whole = sdk.chat.completions.create(**args).choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or "" for c in sdk.chat.completions.create(**args, stream=True) if c.choices
    )
    assert streamed == whole


def test_balance_drops_by_exactly_the_cost_and_usage_is_recorded(lexora: RunningStack) -> None:
    account = lexora.create_account(credits_micro=1_000_000)
    before = lexora.balance(account.account_id)
    sdk = client(lexora, account.api_key)
    responses = [
        sdk.chat.completions.create(model=LOCAL_CHAT_MODEL, messages=HELLO, max_tokens=12, temperature=0),
        sdk.chat.completions.create(model=LOCAL_CHAT_MODEL, messages=HELLO, max_tokens=20, temperature=0.5),
    ]
    with sdk.chat.completions.create(model=LOCAL_CHAT_MODEL, messages=HELLO, max_tokens=10, stream=True) as stream:
        streamed = list(stream)
    usages = [(r.id, r.usage.prompt_tokens, r.usage.completion_tokens) for r in responses]
    usages.append((streamed[-1].id, streamed[-1].usage.prompt_tokens, streamed[-1].usage.completion_tokens))
    expected_pico = sum(request_cost_pico(p, c, PRICE, PRICE) for _, p, c in usages)

    after = lexora.settled_balance(account.account_id)
    assert after.held_micro == 0
    assert before.exact_balance_pico - after.exact_balance_pico == expected_pico

    rows = lexora.wait_for_usage_rows(account.account_id, 3)
    recorded = {(r["request_id"], r["prompt_tokens"], r["completion_tokens"]) for r in rows}
    assert recorded == set(usages)
    assert all(r["status_code"] == 200 and r["model"] == LOCAL_CHAT_MODEL for r in rows)
    assert sum(r["cost_pico"] for r in rows) == expected_pico
    charges = lexora.ledger_charges(account.account_id)
    assert sorted(c["idempotency_key"] for c in charges) == sorted(f"charge:{rid}" for rid, _, _ in usages)
    assert sum(c["cost_pico"] for c in charges) == expected_pico


def test_api_v1_prefix_and_x_api_key_header_work(lexora: RunningStack) -> None:
    account = lexora.create_account()
    response = httpx.post(
        lexora.base_url.replace("/v1", "/api/v1") + "/chat/completions",
        headers={"x-api-key": account.api_key},
        json={"model": LOCAL_CHAT_MODEL, "messages": HELLO, "max_tokens": 4},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] > 0


def test_models_lists_served_and_pipeline_models(lexora: RunningStack) -> None:
    account = lexora.create_account()
    models = {m.id: m for m in client(lexora, account.api_key).models.list()}
    assert models[LOCAL_CHAT_MODEL].model_extra["status"] == "live"
    assert models[LOCAL_CHAT_MODEL].model_extra["context_length"] == 8192
    assert models["meta-llama/Llama-3.2-3B-Instruct"].model_extra["status"] == "pipeline"


def test_health_reports_each_dependency(lexora: RunningStack) -> None:
    body = httpx.get(f"{lexora.base_url}/health", timeout=10).json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"nats", "auth", "billing", "usage", "router"}
    assert body["checks"]["billing"]["checks"]["database"] == "ok"
    assert body["models"][LOCAL_CHAT_MODEL] == "live"


def test_probes_report_liveness_and_readiness(lexora: RunningStack) -> None:
    root = lexora.base_url.removesuffix("/v1")
    assert httpx.get(f"{root}/livez").status_code == 200
    assert httpx.get(f"{root}/readyz").json() == {"status": "ok", "degraded_models": []}
