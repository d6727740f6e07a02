"""API keys as an operator manages them with the admin CLI, and as clients then meet them."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack

HI = [{"role": "user", "content": "Hi"}]


def chat(base_url: str, api_key: str, max_tokens: int = 2) -> httpx.Response:
    return httpx.post(
        f"{base_url}/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": LOCAL_CHAT_MODEL, "messages": HI, "max_tokens": max_tokens},
        timeout=60,
    )


def test_added_key_works_and_listing_shows_only_its_prefix(lexora: RunningStack) -> None:
    account = lexora.create_account()
    added = lexora.admin_cli("add-key", "--account", account.account_id, "--name", "ci")
    assert added["api_key"].startswith("sk-lexora-") and added["api_key"] != account.api_key
    assert chat(lexora.base_url, added["api_key"]).status_code == 200
    listing = lexora.admin_cli("list-keys", "--account", account.account_id)
    assert len(listing["keys"]) == 2
    shown = next(k for k in listing["keys"] if k["key_id"] == added["key_id"])
    assert shown["name"] == "ci" and shown["display_prefix"] == added["display_prefix"]
    assert shown["last_used_at"] is not None and shown["revoked_at"] is None
    assert added["api_key"] not in str(listing) and account.api_key not in str(listing)
    assert added["api_key"][len("sk-lexora-") + 4 :] not in shown["display_prefix"]


def test_revoked_key_is_refused_by_every_gateway_within_a_second(lexora: RunningStack) -> None:
    other_gateway = lexora.start_gateway()
    account = lexora.create_account()
    for gateway in (lexora.base_url, other_gateway):  # both have the key cached as valid
        assert chat(gateway, account.api_key).status_code == 200
    key_id = lexora.admin_cli("list-keys", "--account", account.account_id)["keys"][0]["key_id"]
    lexora.admin_cli("revoke-key", "--key", key_id)
    time.sleep(1)
    for gateway in (lexora.base_url, other_gateway):
        refused = chat(gateway, account.api_key)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    listing = lexora.admin_cli("list-keys", "--account", account.account_id)
    assert listing["keys"][0]["revoked_at"] is not None


def test_revoking_an_unknown_key_is_a_clear_error(lexora: RunningStack) -> None:
    with pytest.raises(AssertionError, match="No key key_nope"):
        lexora.admin_cli("revoke-key", "--key", "key_nope")


def test_spend_limit_refuses_the_request_that_could_exceed_it(lexora: RunningStack) -> None:
    account = lexora.create_account()
    # One short request holds about 6 micro-USD while it runs and costs about 1.5.
    limited = lexora.admin_cli("add-key", "--account", account.account_id, "--spend-limit", "0.00001")
    statuses = []
    for _ in range(8):
        statuses.append(chat(lexora.base_url, limited["api_key"]).status_code)
        # Settled before the next: a refusal is then the spend, not a hold still in flight.
        lexora.settled_balance(account.account_id)
    assert statuses[0] == 200
    assert 402 in statuses, "the limit stops the key before the account runs dry"
    refused = chat(lexora.base_url, limited["api_key"])
    assert refused.status_code == 402 and "spend limit" in refused.json()["error"]["message"]
    lexora.settled_balance(account.account_id)  # settlement is asynchronous
    spent = lexora.query("SELECT spent_micro, held_micro FROM key_spend WHERE key_id = :k", k=limited["key_id"])
    assert spent[0]["spent_micro"] <= 10 and spent[0]["held_micro"] == 0
    assert chat(lexora.base_url, account.api_key).status_code == 200, "the account's other key is unaffected"


def auth_verifications(lexora: RunningStack) -> float:
    """Keys auth has verified (its Prometheus counter)."""
    port = lexora.processes["auth"].env["LEXORA_METRICS_PORT"]
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        if line.startswith("lexora_requests_total{") and 'operation="verify"' in line and 'outcome="ok"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_gateway_verifies_a_key_once_for_a_burst_and_again_in_the_background_before_it_expires(
    lexora: RunningStack,
) -> None:
    gateway = lexora.start_gateway(LEXORA_AUTH_CACHE_TTL_S="4")
    account = lexora.create_account()
    headers = {"Authorization": f"Bearer {account.api_key}"}

    def whoami(_: int = 0) -> int:
        return httpx.get(f"{gateway}/key", headers=headers, timeout=30).status_code

    before = auth_verifications(lexora)
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(whoami, range(8))) == [200] * 8
    assert auth_verifications(lexora) == before + 1
    time.sleep(2.2)  # past half the TTL, well before its end: served, and verified again meanwhile
    assert whoami() == 200
    deadline = time.monotonic() + 5
    while auth_verifications(lexora) < before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert auth_verifications(lexora) == before + 2
