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
    lexora.assert_ledger_consistent(account.account_id)


def test_parallel_top_ups_and_requests_keep_the_ledger_exact(lexora: RunningStack) -> None:
    account = lexora.create_account(credits_micro=30)

    def top_up(n: int) -> dict:
        return lexora.admin_cli(
            "grant",
            "--account",
            account.account_id,
            "--credits",
            "0.00001",
            "--reason",
            f"test {n}",
            "--idempotency-key",
            f"parallel-{account.account_id}-{n % 4}",
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        grants = [pool.submit(top_up, n) for n in range(8)]  # 4 distinct keys, each sent twice
        requests = [pool.submit(chat, lexora, account.api_key, 4) for _ in range(8)]
        [g.result() for g in grants]
        results = [r.result() for r in requests]
    grants_applied = lexora.query(
        "SELECT COUNT(*) AS n FROM ledger_entries WHERE account_id = :a AND idempotency_key LIKE 'grant:parallel-%'",
        a=account.account_id,
    )
    assert grants_applied[0]["n"] == 4, "a repeated grant key credits once"
    served = [r for r in results if not isinstance(r, int)]
    lexora.wait_for_usage_rows(account.account_id, len(results))
    balance = lexora.settled_balance(account.account_id)
    cost = sum(c["cost_pico"] for c in lexora.ledger_charges(account.account_id))
    assert len(lexora.ledger_charges(account.account_id)) == len(served)
    assert (30 + 4 * 10) * 10**6 - balance.exact_balance_pico == cost
    lexora.assert_ledger_consistent(account.account_id)


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
    lexora.settled_balance(account.account_id)
    charges = lexora.ledger_charges(account.account_id)
    assert sorted(c["idempotency_key"] for c in charges) == sorted(f"charge:{r.id}" for r in responses)
    lexora.assert_ledger_consistent(account.account_id)


def test_redelivered_usage_event_is_neither_recorded_nor_charged_twice(lexora: RunningStack) -> None:
    account = lexora.create_account()
    response = chat(lexora, account.api_key, 8)
    assert not isinstance(response, int)
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    balance = lexora.settled_balance(account.account_id)

    async def redeliver() -> None:
        # Past JetStream's dedup window a redelivery arrives with a new message id: the consumers
        # themselves must recognise the request.
        nc = await nats.connect(lexora.nats_url)
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
    after = lexora.settled_balance(account.account_id)  # billing consumes apart from usage: wait for it
    assert len(lexora.ledger_charges(account.account_id)) == 2
    marker_cost = next(r["cost_pico"] for r in rows if r["request_id"] == marker.id)
    assert balance.exact_balance_pico - after.exact_balance_pico == marker_cost
    lexora.assert_ledger_consistent(account.account_id)


def test_a_scheduled_price_change_applies_to_later_requests_only(lexora: RunningStack) -> None:
    import time
    from datetime import UTC, datetime, timedelta

    from lexora_contracts.money import request_cost_pico
    from lexora_contracts.registry import Pricing, ScheduledPrice
    from lexora_dev import stack

    change_at = datetime.now(UTC) + timedelta(seconds=4)
    doubled = Pricing(input_micro_per_mtok=80_000, output_micro_per_mtok=80_000)
    record = lexora.registry_record(LOCAL_CHAT_MODEL).model_copy(
        update={
            "id": "test/repriced",
            "aliases": [],
            "price_changes": [ScheduledPrice(effective_from=change_at, pricing=doubled)],
        }
    )
    stack.publish_catalog(lexora.nats_url, [record])
    account = lexora.create_account()
    client = openai.OpenAI(base_url=lexora.base_url, api_key=account.api_key, max_retries=0)

    def ask() -> openai.types.chat.ChatCompletion:
        deadline = time.monotonic() + 10
        while True:  # until the gateway has seen the new record
            try:
                return client.chat.completions.create(model="test/repriced", messages=HELLO, max_tokens=4)
            except openai.NotFoundError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    before = ask()
    time.sleep(max((change_at - datetime.now(UTC)).total_seconds(), 0) + 0.2)
    after = ask()
    rows = {r["request_id"]: r for r in lexora.wait_for_usage_rows(account.account_id, 2)}
    old_cost = request_cost_pico(before.usage.prompt_tokens, before.usage.completion_tokens, 40_000, 40_000)
    new_cost = request_cost_pico(after.usage.prompt_tokens, after.usage.completion_tokens, 80_000, 80_000)
    assert rows[before.id]["cost_pico"] == old_cost, "usage before the change keeps its price"
    assert rows[after.id]["cost_pico"] == new_cost
    lexora.settled_balance(account.account_id)
    lexora.assert_ledger_consistent(account.account_id)
