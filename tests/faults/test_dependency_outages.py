"""A dependency that is down answers honestly: 503 with Retry-After in the route's own envelope
(OpenAI and Anthropic), never a 401 and never a request served without its credit hold. A key
verified shortly before keeps being served from the gateway's cache for its TTL while auth is down.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import openai
import pytest

from faults.faults import FaultStack
from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import Account

HELLO = [{"role": "user", "content": "Hi"}]
CREDIT_MICRO = 5_000_000


def chat(lexora_url: str, account: Account) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=lexora_url, api_key=account.api_key, max_retries=0, timeout=60)
    return client.chat.completions.create(model=LOCAL_CHAT_MODEL, messages=HELLO, max_tokens=2)  # type: ignore[arg-type]


def assert_openai_503(lexora_url: str, account: Account) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        chat(lexora_url, account)
    assert caught.value.status_code == 503, caught.value.response.text
    assert caught.value.response.headers["retry-after"] == "5"
    assert caught.value.response.json()["error"]["type"] == "service_unavailable"


def assert_anthropic_503(lexora_url: str, account: Account) -> None:
    client = anthropic.Anthropic(
        base_url=lexora_url.removesuffix("/v1"), api_key=account.api_key, max_retries=0, timeout=60
    )
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model=LOCAL_CHAT_MODEL, messages=HELLO, max_tokens=2)  # type: ignore[arg-type]
    assert caught.value.status_code == 503, caught.value.response.text
    assert caught.value.response.headers["retry-after"] == "5"
    assert caught.value.response.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": caught.value.response.json()["error"]["message"]},
    }


def wait_served(lexora_url: str, account: Account, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            chat(lexora_url, account)
            return
        except (openai.APIStatusError, openai.APIConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def assert_nothing_held_or_charged(faults: FaultStack, account: Account, charged_before_pico: int) -> None:
    balance = faults.lexora.settled_balance(account.account_id, timeout=30)
    assert balance.held_micro == 0
    assert CREDIT_MICRO * 10**6 - balance.exact_balance_pico == charged_before_pico
    faults.lexora.assert_ledger_consistent(account.account_id)


@pytest.fixture
def accounts(fault_stack: FaultStack) -> Iterator[tuple[Account, Account, int]]:
    """(an account whose key the gateway has verified and cached, one whose key it has never seen,
    what the first one's request cost)."""
    cached = fault_stack.lexora.create_account(credits_micro=CREDIT_MICRO)
    unseen = fault_stack.lexora.create_account(credits_micro=CREDIT_MICRO)
    reply = chat(fault_stack.lexora.base_url, cached)
    [row] = fault_stack.lexora.wait_for_usage_rows(cached.account_id, 1)
    assert row["request_id"] == reply.id
    fault_stack.lexora.settled_balance(cached.account_id)
    yield cached, unseen, row["cost_pico"]


def test_auth_down_cached_keys_serve_and_unseen_keys_get_503_not_401(
    fault_stack: FaultStack, accounts: tuple[Account, Account, int]
) -> None:
    cached, unseen, _ = accounts
    url = fault_stack.lexora.base_url
    fault_stack.lexora.processes["auth"].kill()
    try:
        served = chat(url, cached)  # verified within the cache's TTL: auth is not asked
        assert served.usage is not None and served.usage.completion_tokens > 0
        assert_openai_503(url, unseen)
        assert_anthropic_503(url, unseen)
    finally:
        fault_stack.kill_service("auth")  # started again, as its Deployment would
    wait_served(url, unseen)
    rows = fault_stack.lexora.wait_for_usage_rows(unseen.account_id, 1)
    assert [r["status_code"] for r in rows] == [200], "the refused requests never reached admission"


def test_postgres_down_is_503_for_every_key_and_nothing_runs_without_its_hold(
    fault_stack: FaultStack, accounts: tuple[Account, Account, int]
) -> None:
    cached, unseen, first_cost = accounts
    url = fault_stack.lexora.base_url
    # The gateway returns an idle account's credit lease within seconds; a request it still covered
    # would be served from it (held in the database already) and settled once Postgres is back.
    fault_stack.lexora.settled_balance(cached.account_id)
    fault_stack.stop_postgres()
    try:
        assert_openai_503(url, unseen)  # auth cannot read its keys: not a 401
        assert_anthropic_503(url, unseen)
        assert_openai_503(url, cached)  # the credit hold cannot be placed: not served for free
        assert_anthropic_503(url, cached)
    finally:
        fault_stack.start_postgres()
    # The refusals are on record at cost 0 once usage can write again (they waited in JetStream).
    rows = fault_stack.lexora.wait_for_usage_rows(cached.account_id, 3, timeout=60)
    assert sorted(r["status_code"] for r in rows) == [200, 503, 503]
    assert all(r["cost_pico"] == 0 for r in rows if r["status_code"] == 503)
    assert_nothing_held_or_charged(fault_stack, cached, first_cost)
    assert_nothing_held_or_charged(fault_stack, unseen, 0)
    wait_served(url, cached)


def test_nats_down_is_503_for_every_key(fault_stack: FaultStack, accounts: tuple[Account, Account, int]) -> None:
    cached, unseen, first_cost = accounts
    url = fault_stack.lexora.base_url
    fault_stack.stop_nats()
    try:
        time.sleep(1)  # the gateway sees its connection drop
        assert_openai_503(url, cached)
        assert_anthropic_503(url, cached)
        assert_openai_503(url, unseen)  # the verification cannot reach auth
    finally:
        fault_stack.start_nats()
    wait_served(url, cached)
    wait_served(url, unseen)
    rows = fault_stack.lexora.wait_for_usage_rows(cached.account_id, 2, timeout=30)
    # A request admitted before the gateway saw its connection drop got its hold, then no router:
    # it is on record as refused once the bus is back, its hold released. Nothing unserved costs.
    refused = [r for r in rows if r["status_code"] != 200]
    assert all(r["cost_pico"] == 0 for r in refused), refused
    balance = fault_stack.lexora.settled_balance(cached.account_id, timeout=30)
    assert balance.held_micro == 0
    assert CREDIT_MICRO * 10**6 - balance.exact_balance_pico == sum(r["cost_pico"] for r in rows)
    assert first_cost in {r["cost_pico"] for r in rows}
