"""Plan limits as clients meet them, enforced across gateway replicas."""

from __future__ import annotations

import json

import httpx
import pytest

from lexora_contracts.registry import Pricing
from lexora_dev import stack
from lexora_dev.catalog import LOCAL_CHAT_MODEL
from lexora_dev.processes import wait_until
from support.stack import RunningStack

HI = [{"role": "user", "content": "Hi"}]
FREE_MODEL = "test/free-smollm2"
# Small limits so the tests reach them quickly; the per-minute limit is high so a test that happens
# to straddle a minute boundary cannot flake.
PLANS = json.dumps(
    {
        "free": {"requests_per_minute": 1000, "requests_per_day": 7, "free_model_requests_per_day": 3},
        "pro": {"requests_per_minute": 1000, "requests_per_day": 1000, "free_model_requests_per_day": 50},
        "enterprise": {},
    }
)


@pytest.fixture(scope="module")
def replicas(lexora: RunningStack) -> tuple[str, str]:
    """Two more gateways with the same plan settings, as two pods of one deployment, and a free
    model (price 0) served by the same engine."""
    first = lexora.start_gateway(LEXORA_PLANS=PLANS)
    second = lexora.start_gateway(LEXORA_PLANS=PLANS)
    free = lexora.registry_record(LOCAL_CHAT_MODEL).model_copy(
        update={"id": FREE_MODEL, "pricing": Pricing(input_micro_per_mtok=0, output_micro_per_mtok=0), "aliases": []}
    )
    stack.publish_catalog(lexora.nats_url, [free])
    for gateway in (first, second, lexora.base_url):
        wait_until(lambda g=gateway: httpx.get(f"{g}/models/{FREE_MODEL}").status_code == 200, 10, "free model listed")
    return first, second


def chat(base_url: str, api_key: str, model: str = LOCAL_CHAT_MODEL) -> httpx.Response:
    return httpx.post(
        f"{base_url}/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": model, "messages": HI, "max_tokens": 1},
        timeout=60,
    )


def test_every_response_carries_rate_limit_headers(lexora: RunningStack, replicas: tuple[str, str]) -> None:
    account = lexora.create_account(plan="free")
    first = chat(replicas[0], account.api_key)
    second = chat(replicas[1], account.api_key)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-ratelimit-limit"] == "1000"
    assert int(second.headers["x-ratelimit-remaining"]) == int(first.headers["x-ratelimit-remaining"]) - 1
    assert int(first.headers["x-ratelimit-reset"]) % 60 == 0
    error = httpx.post(
        f"{replicas[0]}/chat/completions",
        headers={"Authorization": f"Bearer {account.api_key}"},
        json={"model": "no/such-model", "messages": HI},
    )
    assert error.status_code == 404 and "x-ratelimit-limit" in error.headers
    headers = {"Authorization": f"Bearer {account.api_key}"}
    malformed = httpx.post(f"{replicas[0]}/chat/completions", headers=headers, content=b"{not json")
    checkout = httpx.post(f"{replicas[0]}/billing/checkout", headers=headers, json={"amount_usd": "5.00"})
    usage = httpx.get(f"{replicas[0]}/usage", headers=headers)
    for response, status in ((malformed, 400), (usage, 200)):
        assert response.status_code == status and response.headers["x-ratelimit-limit"] == "1000", response.text
    assert checkout.status_code >= 400 and "x-ratelimit-remaining" in checkout.headers, checkout.text
    assert int(malformed.headers["x-ratelimit-remaining"]) == int(second.headers["x-ratelimit-remaining"])


def test_limits_hold_across_two_gateway_replicas(lexora: RunningStack, replicas: tuple[str, str]) -> None:
    account = lexora.create_account(plan="free")  # 7 requests a day under PLANS
    statuses = [chat(replicas[i % 2], account.api_key).status_code for i in range(7)]
    assert statuses == [200] * 7
    refused = chat(replicas[1], account.api_key)
    assert refused.status_code == 429
    body = refused.json()["error"]
    assert body["type"] == "rate_limit_exceeded" and body["code"] == "rate_limit_exceeded"
    assert "Daily limit of 7 requests" in body["message"]
    assert int(refused.headers["retry-after"]) > 0
    assert lexora.settled_balance(account.account_id).balance_micro < 5_000_000  # the 7 were charged
    rows = lexora.wait_for_usage_rows(account.account_id, 8)
    assert sorted(r["status_code"] for r in rows) == [200] * 7 + [429]
    assert sum(r["cost_pico"] for r in rows if r["status_code"] == 429) == 0, "the refused request cost nothing"


def test_free_model_daily_limit_says_to_add_credits_or_wait(lexora: RunningStack, replicas: tuple[str, str]) -> None:
    account = lexora.create_account(plan="free", credits_micro=0)
    for i in range(3):
        response = chat(replicas[i % 2], account.api_key, FREE_MODEL)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["cost"] == 0
    refused = chat(replicas[0], account.api_key, FREE_MODEL)
    assert refused.status_code == 429
    assert "Daily free limit reached" in refused.json()["error"]["message"]
    assert "Add credits" in refused.json()["error"]["message"]
    # Priced models are still refused for want of credit, not for the free allowance.
    assert chat(replicas[0], account.api_key).status_code == 402


def test_enterprise_is_unlimited(lexora: RunningStack, replicas: tuple[str, str]) -> None:
    account = lexora.create_account(plan="enterprise")
    responses = [chat(replicas[0], account.api_key) for _ in range(9)]
    assert {r.status_code for r in responses} == {200}
    assert responses[-1].headers["x-ratelimit-limit"] == "unlimited"
