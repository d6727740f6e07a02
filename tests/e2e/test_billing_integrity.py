"""Money under stress: parallel requests on one account, and a usage service killed mid-way."""

from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor

import nats
import openai

from lexora_contracts import subjects
from lexora_contracts.messages import UsageEvent
from lexora_dev.catalog import LOCAL_CHAT_MODEL
from lexora_runtime.bus import encode
from support.stack import RunningStack

HELLO = [{"role": "user", "content": "Hi"}]


def chat(lexora: RunningStack, api_key: str, max_tokens: int = 16) -> openai.types.chat.ChatCompletion | int:
    client = openai.OpenAI(base_url=lexora.base_url, api_key=api_key, max_retries=0, timeout=120)
    try:
        return client.chat.completions.create(model=LOCAL_CHAT_MODEL, messages=HELLO, max_tokens=max_tokens)
    except openai.APIStatusError as exc:
        return exc.status_code


def test_parallel_requests_never_overdraw_and_charges_equal_settled_usage(lexora: RunningStack) -> None:
    # Each request holds about 6 micro-USD while it runs: credit for only a few at a time.
    initial = 20
    account = lexora.create_account(credits_micro=initial)
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda _: chat(lexora, account.api_key), range(12)))
    served = [r for r in results if not isinstance(r, int)]
    refused = [r for r in results if isinstance(r, int)]
    assert served, "some requests fit in the credit"
    assert refused and set(refused) == {402}, "the rest are refused before any work is done"

    balance = lexora.settled_balance(account.account_id)
    assert balance.held_micro == 0
    assert balance.balance_micro >= 0
    rows = lexora.wait_for_usage_rows(account.account_id, len(results))
    assert {r["request_id"] for r in rows if r["status_code"] == 200} == {r.id for r in served}
    refused_rows = [r for r in rows if r["status_code"] != 200]
    assert len(refused_rows) == len(refused), "refused requests are on record too"
    assert {(r["status_code"], r["cost_pico"]) for r in refused_rows} == {(402, 0)}
    settled_cost = sum(r["cost_pico"] for r in rows)
    charges = lexora.ledger_charges(account.account_id)
    assert len(charges) == len(served)
    assert sum(c["cost_pico"] for c in charges) == settled_cost
    assert initial * 10**6 - balance.exact_balance_pico == settled_cost
    assert -sum(c["amount_micro"] for c in charges) == initial - balance.balance_micro


def test_usage_service_killed_mid_way_records_every_request_exactly_once(lexora: RunningStack) -> None:
    account = lexora.create_account()
    lexora.processes["usage"].proc.send_signal(signal.SIGKILL)
    lexora.processes["usage"].proc.wait()
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            responses = list(pool.map(lambda _: chat(lexora, account.api_key, 8), range(6)))
        assert all(not isinstance(r, int) for r in responses), "serving does not depend on the usage service"
        assert lexora.usage_rows(account.account_id) == []
    finally:
        lexora.start("usage")
    rows = lexora.wait_for_usage_rows(account.account_id, 6)
    assert sorted(r["request_id"] for r in rows) == sorted(r.id for r in responses)
    charges = lexora.ledger_charges(account.account_id)
    assert sorted(c["idempotency_key"] for c in charges) == sorted(f"charge:{r.id}" for r in responses)


def test_redelivered_usage_event_is_neither_recorded_nor_charged_twice(lexora: RunningStack) -> None:
    account = lexora.create_account()
    response = chat(lexora, account.api_key, 8)
    assert not isinstance(response, int)
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    balance = lexora.settled_balance(account.account_id)

    async def redeliver() -> None:
        # Past JetStream's dedup window a redelivery arrives with a new message id: the consumers
        # themselves must recognise the request.
        nc = await nats.connect(lexora.config.nats_url)
        event = UsageEvent(
            request_id=row["request_id"],
            account_id=account.account_id,
            key_id=row["key_id"],
            model=row["model"],
            status_code=200,
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            cost_pico=row["cost_pico"],
            received_at=0,
            latency_ms=1,
        )
        await nc.jetstream().publish(
            subjects.USAGE_REQUEST_COMPLETED, encode(event), headers={subjects.MSG_ID_HEADER: "replay-1"}
        )
        await nc.drain()

    asyncio.run(redeliver())
    marker = chat(lexora, account.api_key, 4)  # a later event: once it is recorded, the replay was handled
    assert not isinstance(marker, int)
    rows = lexora.wait_for_usage_rows(account.account_id, 2)
    assert len(rows) == 2
    assert len(lexora.ledger_charges(account.account_id)) == 2
    after = lexora.settled_balance(account.account_id)
    marker_cost = next(r["cost_pico"] for r in rows if r["request_id"] == marker.id)
    assert balance.exact_balance_pico - after.exact_balance_pico == marker_cost
