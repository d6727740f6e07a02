"""GET /v1/usage, /v1/key and /v1/credits, checked against what the requests themselves reported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import openai

from lexora_contracts.money import request_cost_pico
from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack

PRICE = 40_000
HI = [{"role": "user", "content": "Hi"}]


def get(lexora: RunningStack, path: str, api_key: str, **params: object) -> httpx.Response:
    return httpx.get(f"{lexora.base_url}{path}", params=params, headers={"Authorization": f"Bearer {api_key}"})


def test_usage_report_matches_the_requests_made(lexora: RunningStack) -> None:
    account = lexora.create_account(plan="pro")
    sdk = openai.OpenAI(base_url=lexora.base_url, api_key=account.api_key, max_retries=0)
    replies = [sdk.chat.completions.create(model=LOCAL_CHAT_MODEL, messages=HI, max_tokens=n) for n in (3, 5, 7)]
    failed = httpx.post(
        f"{lexora.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {account.api_key}"},
        json={"model": "meta-llama/Llama-3.2-3B-Instruct", "messages": HI},
    )
    assert failed.status_code == 503
    lexora.wait_for_usage_rows(account.account_id, 4)
    lexora.settled_balance(account.account_id)

    body = get(lexora, "/usage", account.api_key).json()
    prompt = sum(r.usage.prompt_tokens for r in replies)
    completion = sum(r.usage.completion_tokens for r in replies)
    cost_pico = sum(request_cost_pico(r.usage.prompt_tokens, r.usage.completion_tokens, PRICE, PRICE) for r in replies)
    assert body["object"] == "usage"
    assert body["summary"]["total_requests"] == 4
    assert body["summary"]["total_prompt_tokens"] == prompt
    assert body["summary"]["total_completion_tokens"] == completion
    assert body["summary"]["total_tokens"] == prompt + completion
    assert body["summary"]["total_cost"] == round(cost_pico / 1e12, 6)
    assert body["summary"]["avg_latency_ms"] >= 0
    assert body["account"] == {"credits_remaining": (5_000_000 * 10**6 - cost_pico) / 10**10, "vip_tier": 1}
    assert len(body["daily"]) == 30
    today = body["daily"][-1]
    assert today["date"] == datetime.now(UTC).date().isoformat()
    assert (today["requests"], today["tokens"]) == (4, prompt + completion)
    assert {m["model_id"]: m["requests"] for m in body["by_model"]} == {
        LOCAL_CHAT_MODEL: 3,
        "meta-llama/Llama-3.2-3B-Instruct": 1,
    }
    activity = body["recent_activity"]
    assert activity[0]["status_code"] == 503 and activity[0]["cost"] == 0, "failed requests are listed at cost 0"
    assert [a["id"] for a in activity[1:]] == [r.id for r in reversed(replies)]
    assert set(activity[1]) == {
        "id",
        "model_id",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost",
        "latency_ms",
        "status_code",
        "thinking_used",
        "created_at",
    }
    assert activity[1]["thinking_used"] is False and activity[1]["created_at"].endswith("Z")
    assert body["pagination"] == {"page": 1, "limit": 50, "total": 4, "total_pages": 1}
    limit = body["free_model_daily_limit"]
    assert (limit["limit"], limit["used"], limit["remaining"], limit["timezone"]) == (50, 0, 50, "UTC")


def test_usage_filters_and_pages(lexora: RunningStack) -> None:
    account = lexora.create_account()
    sdk = openai.OpenAI(base_url=lexora.base_url, api_key=account.api_key, max_retries=0)
    for _ in range(3):
        sdk.chat.completions.create(model=LOCAL_CHAT_MODEL, messages=HI, max_tokens=2)
    lexora.wait_for_usage_rows(account.account_id, 3)
    page2 = get(lexora, "/usage", account.api_key, limit=2, page=2).json()
    assert len(page2["recent_activity"]) == 1
    assert page2["pagination"] == {"page": 2, "limit": 2, "total": 3, "total_pages": 2}
    assert get(lexora, "/usage", account.api_key, model="other/model").json()["summary"]["total_requests"] == 0
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    future = get(lexora, "/usage", account.api_key, start_date=tomorrow).json()
    assert future["summary"]["total_requests"] == 0 and future["recent_activity"] == []
    assert sum(d["requests"] for d in future["daily"]) == 3, "the daily series ignores the filters"
    today = datetime.now(UTC).date().isoformat()
    assert get(lexora, "/usage", account.api_key, end_date=today).json()["summary"]["total_requests"] == 3


def test_usage_refuses_bad_parameters_naming_them(lexora: RunningStack) -> None:
    account = lexora.create_account()
    # A page past the deepest one (its offset would overflow the database's integers) is refused too.
    cases = [
        ({"limit": 101}, "limit"),
        ({"page": 0}, "page"),
        ({"page": 10**20}, "page"),
        ({"start_date": "March"}, "start_date"),
    ]
    for params, name in cases:
        response = get(lexora, "/usage", account.api_key, **params)
        assert response.status_code == 400 and response.json()["error"]["param"] == name


def test_an_account_sees_only_its_own_usage(lexora: RunningStack) -> None:
    busy, quiet = lexora.create_account(), lexora.create_account()
    openai.OpenAI(base_url=lexora.base_url, api_key=busy.api_key, max_retries=0).chat.completions.create(
        model=LOCAL_CHAT_MODEL, messages=HI, max_tokens=2
    )
    lexora.wait_for_usage_rows(busy.account_id, 1)
    assert get(lexora, "/usage", quiet.api_key).json()["summary"]["total_requests"] == 0
    assert get(lexora, "/usage", "sk-lexora-nobody").status_code == 401


def test_key_and_credits_endpoints(lexora: RunningStack) -> None:
    account = lexora.create_account(plan="free")
    key = get(lexora, "/key", account.api_key)
    assert key.status_code == 200 and "x-ratelimit-limit" in key.headers
    data = key.json()["data"]
    assert data["is_free_tier"] is True and data["limit"] is None and data["usage"] == 0
    assert data["rate_limit"] == {"requests": 10, "interval": "1m"}
    assert data["free_model_daily_limit"]["limit"] == 5
    reply = openai.OpenAI(base_url=lexora.base_url, api_key=account.api_key, max_retries=0).chat.completions.create(
        model=LOCAL_CHAT_MODEL, messages=HI, max_tokens=2
    )
    charged = lexora.settled_balance(account.account_id)
    credits = get(lexora, "/credits", account.api_key).json()["data"]
    assert credits["total_credits"] == 5.0
    assert credits["total_usage"] == (5_000_000 - charged.balance_micro) / 1e6
    assert reply.usage.total_tokens > 0
