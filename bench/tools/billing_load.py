"""Drives billing's reserve-then-settle path directly over NATS, without gateway or router.

Each of `--concurrency` workers loops: reserve a hold (`billing.v1.credits.reserve`, one
request/reply, one Postgres transaction in billing), then publish the request's outcome to
JetStream (`usage.v1.request.completed` with Nats-Msg-Id = request id, acked, exactly as the
router does), which billing's consumer settles asynchronously (and usage records). Accounts are
taken round-robin from `--accounts-file`: many accounts, or a single hot one.

Prints one JSON object: operations, reserve latency, and the request-id prefix so the harness can
wait for settlement and check every operation was charged exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
import uuid

from lexora_billing.client import BillingClient
from lexora_contracts.messages import ReserveRequest, UsageEvent
from lexora_runtime.bus import connect, publish_usage_event
from lexora_runtime.loop import fast_runner


async def drive(args: argparse.Namespace) -> dict:
    with open(args.accounts_file) as f:
        accounts = [line.strip() for line in f if line.strip()]
    cycle = itertools.cycle(accounts)
    nc = await connect(args.nats_url, "bench-billing-load")
    js = nc.jetstream()
    billing = BillingClient(nc)
    prefix = f"bench-billing-{args.label}-{uuid.uuid4().hex[:8]}-"
    reserve_ms: list[float] = []
    refused: dict[str, int] = {}
    counter = itertools.count()
    stop_at = time.perf_counter() + args.duration

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            request_id = f"{prefix}{next(counter)}"
            account_id = next(cycle)
            received_at = time.time()
            started = time.perf_counter()
            try:
                await billing.reserve(
                    ReserveRequest(
                        request_id=request_id, account_id=account_id, amount_micro=args.reserve_micro, ttl_s=300
                    )
                )
            except Exception as exc:
                refused[type(exc).__name__] = refused.get(type(exc).__name__, 0) + 1
                continue
            reserve_ms.append((time.perf_counter() - started) * 1000)
            await publish_usage_event(
                js,
                UsageEvent(
                    request_id=request_id,
                    account_id=account_id,
                    key_id="bench",
                    model=args.model,
                    status_code=200,
                    prompt_tokens=args.prompt_tokens,
                    completion_tokens=args.completion_tokens,
                    cost_pico=args.cost_pico,
                    reserved_micro=args.reserve_micro,
                    finish_reason="length",
                    received_at=received_at,
                    latency_ms=int((time.perf_counter() - started) * 1000),
                ),
            )

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    await nc.drain()
    return {
        "tool": "billing_load",
        "label": args.label,
        "accounts": len(accounts),
        "concurrency": args.concurrency,
        "duration_s": round(elapsed, 3),
        "operations": len(reserve_ms),
        "refused": refused,
        "reserve_rps": len(reserve_ms) / elapsed if elapsed else 0.0,
        "reserve_ms": reserve_ms,
        "request_id_prefix": prefix,
        "cost_pico": args.cost_pico,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench billing-load", description="reserve-then-settle load on billing, over NATS"
    )
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--accounts-file", required=True)
    parser.add_argument("--label", default="run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--model", default="bench/instant-echo")
    parser.add_argument("--reserve-micro", type=int, default=10)
    parser.add_argument("--prompt-tokens", type=int, default=12)
    parser.add_argument("--completion-tokens", type=int, default=16)
    parser.add_argument("--cost-pico", type=int, default=2_800_000)
    args = parser.parse_args(argv)
    with fast_runner() as runner:
        result = runner.run(drive(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
