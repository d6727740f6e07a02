"""Credit holds, placed before a job is dispatched.

A gateway given billing's Postgres database (LEXORA_DATABASE_URL) places each hold itself, with
billing's own one-statement reserve (`lexora_billing.pg_ledger.hold`): one database round trip,
instead of a NATS request to billing, billing's round trip to the database and billing's reply.
Without it (or on SQLite, `lexora dev`'s default) the gateway asks billing over NATS. Either way
the hold is the same rows, refused with the same 402, and settled and swept by billing.

The gateway's holds commit asynchronously (`synchronous_commit = off` on its connections): the
statement is atomic and visible at once, but its commit does not wait for the WAL to reach the
disk, which was half of a hold's time. Only a Postgres crash can undo such a commit, and only for
holds of the last fraction of a second; the crash undoes each of them whole (balance, key, entry
and reservation rows together). Their jobs are still charged exactly once: settlement charges an
event whose reservation it cannot find, and its own commits are synchronous (one flushes every
earlier hold with it). The cost of the crash is that those few jobs ran without credit set aside.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from nats.aio.client import Client as NATS

from lexora_billing import pg_ledger
from lexora_contracts import subjects
from lexora_contracts.errors import InternalError
from lexora_contracts.messages import Identity, ReserveReply, ReserveRequest
from lexora_runtime.bus import call
from lexora_runtime.db import CONNECTION_LOST, create_asyncpg_pool, create_engine, is_sqlite

# A hold's commit does not wait for the WAL flush (see the module docstring); settlement's do.
ASYNC_COMMIT = {"synchronous_commit": "off"}


class CreditHolds:
    def __init__(self, nc: NATS, pool: asyncpg.Pool | None = None):
        self._nc = nc
        self._pool = pool

    @classmethod
    async def open(cls, nc: NATS, database_url: str | None, pool_size: int) -> CreditHolds:
        if not database_url or is_sqlite(database_url):
            return cls(nc)
        engine = create_engine(database_url)  # only to read the connection options from the URL
        try:
            # min_size=0: the gateway starts while Postgres is not reachable yet, as billing does.
            pool = await create_asyncpg_pool(engine, min_size=0, max_size=pool_size, server_settings=ASYNC_COMMIT)
        finally:
            await engine.dispose()
        return cls(nc, pool)

    @property
    def direct(self) -> bool:
        return self._pool is not None

    async def hold(self, identity: Identity, request_id: str, amount_micro: int, ttl_s: float) -> None:
        """Hold `amount_micro` for one job, or raise the 402 (the account's balance or the key's
        spend limit cannot cover it)."""
        if self._pool is None:
            await call(
                self._nc,
                subjects.BILLING_CREDITS_RESERVE,
                ReserveRequest(
                    request_id=request_id,
                    account_id=identity.account_id,
                    amount_micro=amount_micro,
                    ttl_s=ttl_s,
                    key_id=identity.key_id,
                    key_spend_limit_micro=identity.spend_limit_micro,
                ),
                ReserveReply,
            )
            return
        try:
            await pg_ledger.hold(
                self._pool,
                request_id,
                identity.account_id,
                amount_micro,
                ttl_s,
                datetime.now(UTC),
                identity.key_id,  # held against only when the key has a spend limit
                identity.spend_limit_micro,
            )
        except (*CONNECTION_LOST, asyncpg.PostgresError) as exc:
            # As when billing cannot be reached: a 500 on record, nothing charged. Should the lost
            # statement have committed, its hold is released by billing's sweeper.
            raise InternalError("the credit ledger could not be reached") from exc

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
