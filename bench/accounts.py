"""The benchmark's accounts: Enterprise plan (no rate limit is reached, but the gateway still counts
every request), each with $1,000 of credit, created over NATS as an operator would."""

from __future__ import annotations

import asyncio

from bench.settings import ACCOUNT_CREDIT_MICRO
from lexora_contracts import subjects
from lexora_contracts.messages import Balance, CreateAccountReply, CreateAccountRequest, GrantRequest
from lexora_runtime.bus import call, connect


async def create_accounts(nats_url: str, count: int, prefix: str) -> list[tuple[str, str]]:
    nc = await connect(nats_url, "bench")
    limit = asyncio.Semaphore(8)

    async def one(i: int) -> tuple[str, str]:
        async with limit:
            reply = await call(
                nc,
                subjects.AUTH_ACCOUNT_CREATE,
                CreateAccountRequest(plan="enterprise", name=f"{prefix}-{i}"),
                CreateAccountReply,
                timeout=30,
            )
            await call(
                nc,
                subjects.BILLING_CREDITS_GRANT,
                GrantRequest(
                    account_id=reply.account_id,
                    amount_micro=ACCOUNT_CREDIT_MICRO,
                    idempotency_key=f"bench:{reply.account_id}",
                    actor="bench",
                    reason="benchmark credit",
                ),
                Balance,
                timeout=30,
            )
            return reply.account_id, reply.api_key

    try:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        await nc.drain()
