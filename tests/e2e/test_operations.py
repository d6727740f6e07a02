"""What an operator relies on: the admin CLI, metrics on every service, safe structured logs."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

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


def samples(port: str | int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_dashboards_metrics_follow_what_was_served(lexora: RunningStack) -> None:
    """What the chart's dashboard and alerts read (tests/charts/test_chart_observability.py) moves
    with real requests: time to first token, spend, jobs running, endpoints, consumer lag, the sweep."""
    router_port = lexora.processes["router"].env["LEXORA_METRICS_PORT"]
    model = (("model", LOCAL_CHAT_MODEL),)
    before = samples(router_port)
    account = lexora.create_account()
    client = openai.OpenAI(base_url=lexora.base_url, api_key=account.api_key, max_retries=0)
    reply = client.chat.completions.create(
        model=LOCAL_CHAT_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    after = samples(router_port)
    first_tokens = ("lexora_time_to_first_token_seconds_count", model)
    assert after[first_tokens] - before.get(first_tokens, 0) >= 1
    spent = after[("lexora_spend_usd_total", model)] - before.get(("lexora_spend_usd_total", model), 0)
    assert spent > 0 and spent == pytest.approx(reply.usage.cost, abs=1e-6)
    assert after[("lexora_in_flight_requests", model)] == 0
    # What a ModelDeployment's autoscaler reads; the dev stack's records name no ModelDeployment.
    assert after[("lexora_pending_requests", (*model, ("model_deployment", ""), ("model_namespace", "")))] == 0
    assert after[("lexora_model_endpoints", (*model, ("state", "ready")))] == 1
    lexora.settled_balance(account.account_id)
    billing = samples(lexora.processes["billing"].env["LEXORA_METRICS_PORT"])
    assert billing[("lexora_consumer_pending_events", (("consumer", "billing-settle"),))] >= 0
    assert billing[("lexora_last_hold_sweep_timestamp_seconds", ())] > 0
    assert billing[("lexora_oldest_overdue_hold_seconds", ())] == 0
    usage = samples(lexora.processes["usage"].env["LEXORA_METRICS_PORT"])
    assert ("lexora_consumer_pending_events", (("consumer", "usage-record"),)) in usage


def test_logs_are_json_carry_the_request_id_and_never_the_key(lexora: RunningStack) -> None:
    account = lexora.create_account()
    client = openai.OpenAI(base_url=lexora.base_url, api_key=account.api_key, max_retries=0)
    reply = client.chat.completions.create(
        model=LOCAL_CHAT_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    router_lines = [json.loads(line) for line in lexora.processes["router"].log_path.read_text().splitlines()]
    assert any(line.get("request_id") == reply.id for line in router_lines)
    assert account.api_key not in lexora.logs()
