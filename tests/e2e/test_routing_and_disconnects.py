"""The router's failure handling and the disconnecting client, on the real engine."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from lexora_contracts.money import request_cost_pico
from lexora_contracts.registry import Endpoint
from lexora_dev import stack
from lexora_dev.catalog import LOCAL_CHAT_MODEL
from lexora_dev.processes import free_port
from support.stack import RunningStack, stream_long_job

PRICE = 40_000


@pytest.fixture(scope="module")
def extra_models(lexora: RunningStack) -> Iterator[dict[str, str]]:
    """Registry records as an operator might leave them: one model whose endpoints include a dead
    one, one whose only endpoint is dead. Withdrawn afterwards: the stack's health (which asks
    every endpoint) is `ok` again for the modules that run after this one."""
    live = lexora.registry_record(LOCAL_CHAT_MODEL)
    dead = Endpoint(name="dead", grpc_address=f"127.0.0.1:{free_port()}", http_address=f"127.0.0.1:{free_port()}")
    failover = live.model_copy(update={"id": "test/failover", "endpoints": [dead, *live.endpoints]})
    all_dead = live.model_copy(update={"id": "test/all-dead", "endpoints": [dead]})
    stack.publish_catalog(lexora.nats_url, [failover, all_dead])
    _wait_listed(lexora, {failover.id, all_dead.id})
    yield {"failover": failover.id, "all_dead": all_dead.id}
    stack.withdraw_catalog(lexora.nats_url, [failover.id, all_dead.id])


def _wait_listed(lexora: RunningStack, ids: set[str]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listed = {m["id"] for m in httpx.get(f"{lexora.base_url}/models").json()["data"]}
        if ids <= listed:
            return
        time.sleep(0.1)
    raise AssertionError(f"{ids} never appeared in /v1/models")


def test_router_fails_over_from_an_unreachable_endpoint(lexora: RunningStack, extra_models: dict[str, str]) -> None:
    account = lexora.create_account()
    client = openai.OpenAI(base_url=lexora.base_url, api_key=account.api_key, max_retries=0)
    for _ in range(3):  # whichever endpoint the policy tries first, the answer comes from the live one
        reply = client.chat.completions.create(
            model=extra_models["failover"], messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert reply.usage.completion_tokens > 0
    for _ in range(3):  # a streaming request goes over HTTP, and fails over the same way
        chunks = list(
            client.chat.completions.create(
                model=extra_models["failover"],
                messages=[{"role": "user", "content": "Hi"}],
                max_tokens=4,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_no_reachable_endpoint_is_503_and_not_charged(lexora: RunningStack, extra_models: dict[str, str]) -> None:
    account = lexora.create_account()
    client = openai.OpenAI(base_url=lexora.base_url, api_key=account.api_key, max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model=extra_models["all_dead"], messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"] == "30"
    balance = lexora.settled_balance(account.account_id)
    assert balance.held_micro == 0 and balance.exact_balance_pico == 5_000_000 * 10**6
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    assert row["status_code"] == 503 and row["cost_pico"] == 0


def test_client_disconnecting_mid_stream_pays_only_for_tokens_produced(lexora: RunningStack) -> None:
    account = lexora.create_account()
    subscriptions_before = lexora.nats_subscriptions("lexora-gateway")
    with stream_long_job(lexora.base_url, account.api_key, max_tokens=3000) as response:
        received = 0
        for line in response.iter_lines():
            if line.startswith("data: "):
                received += 1
            if received == 4:
                break  # hang up after a few tokens
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    assert row["status_code"] == 499 and row["finish_reason"] == "cancelled"
    assert 3 <= row["completion_tokens"] < 1000, "the engine stopped soon after the client left"
    assert row["cost_pico"] == request_cost_pico(row["prompt_tokens"], row["completion_tokens"], PRICE, PRICE)
    balance = lexora.settled_balance(account.account_id)
    assert balance.held_micro == 0
    assert 5_000_000 * 10**6 - balance.exact_balance_pico == row["cost_pico"]
    assert lexora.nats_subscriptions("lexora-gateway") == subscriptions_before, "the reply inbox was dropped"
