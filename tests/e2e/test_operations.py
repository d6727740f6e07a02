"""What an operator relies on: the admin CLI, metrics on every service, safe structured logs."""

from __future__ import annotations

import json

import httpx
import openai

from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import RunningStack


def test_admin_cli_creates_an_account_whose_key_works(lexora: RunningStack) -> None:
    created = lexora.admin_cli("create-key", "--credits", "0.25", "--plan", "pro")
    assert created["account_id"].startswith("acct_")
    assert created["api_key"].startswith("sk-lexora-")
    assert created["plan"] == "pro" and created["balance_usd"] == "0.250000"
    client = openai.OpenAI(base_url=lexora.base_url, api_key=created["api_key"], max_retries=0)
    reply = client.chat.completions.create(
        model=LOCAL_CHAT_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert reply.usage.completion_tokens > 0
    shown = lexora.admin_cli("balance", "--account", created["account_id"])
    assert shown["balance_micro"] <= 250_000


def test_every_service_serves_prometheus_metrics(lexora: RunningStack) -> None:
    gateway = httpx.get(lexora.base_url.removesuffix("/v1") + "/metrics").text
    assert 'lexora_requests_total{operation="/v1/chat/completions"' in gateway
    for service in ("auth", "billing", "usage", "router"):
        port = lexora.processes[service].env["LEXORA_METRICS_PORT"]
        body = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "lexora_requests_total" in body, service
    router_port = lexora.processes["router"].env["LEXORA_METRICS_PORT"]
    assert 'lexora_tokens_total{direction="output"' in httpx.get(f"http://127.0.0.1:{router_port}/metrics").text


def test_logs_are_json_carry_the_request_id_and_never_the_key(lexora: RunningStack) -> None:
    account = lexora.create_account()
    client = openai.OpenAI(base_url=lexora.base_url, api_key=account.api_key, max_retries=0)
    reply = client.chat.completions.create(
        model=LOCAL_CHAT_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    router_lines = [json.loads(line) for line in lexora.processes["router"].log_path.read_text().splitlines()]
    assert any(line.get("request_id") == reply.id for line in router_lines)
    assert account.api_key not in lexora.logs()
