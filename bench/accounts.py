"""The benchmark's accounts: Enterprise plan (no rate limit is reached, but the gateway still counts
every request), each with $1,000 of credit, opened through auth's and billing's clients as an
operator's `lexora admin create-key` opens one (lexora_cli.accounts)."""

from __future__ import annotations

import asyncio

from bench.settings import ACCOUNT_CREDIT_MICRO
from lexora_auth.client import AuthClient
from lexora_billing.client import BillingClient
from lexora_cli.accounts import open_funded_account
from lexora_runtime.bus import connect


async def create_accounts(nats_url: str, count: int, prefix: str) -> list[tuple[str, str]]:
    """`count` funded accounts named `<prefix>-<i>`: (account id, API key) of each."""
    nc = await connect(nats_url, "bench")
    auth, billing = AuthClient(nc), BillingClient(nc)
    limit = asyncio.Semaphore(8)

    async def one(i: int) -> tuple[str, str]:
        async with limit:
            funded = await open_funded_account(
                auth,
                billing,
                ACCOUNT_CREDIT_MICRO,
                plan="enterprise",
                name=f"{prefix}-{i}",
                actor="bench",
                reason="benchmark credit",
            )
            return funded.account.account_id, funded.account.api_key

    try:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        await nc.drain()
