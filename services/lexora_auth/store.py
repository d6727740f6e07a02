"""Accounts and keys in the database (auth owns the accounts and api_keys tables)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lexora_auth import keys
from lexora_contracts.errors import NotFound
from lexora_contracts.messages import CreateAccountReply, CreateKeyReply, Identity, KeyInfo, Plan
from lexora_db.engine import on_pooled_connection
from lexora_db.schema import accounts, api_keys

LAST_USE_PRECISION = timedelta(seconds=30)

# A verification is this one statement: the key's identity (none for a disabled account's key;
# `admin` when an admin owns the account), and its "last used" time
# moved forward in the same statement when it is older than LAST_USE_PRECISION ($2 now, $3 now
# minus the precision). A revoked or unknown key returns no row and changes nothing.
IDENTIFY = """
WITH found AS (
    SELECT k.id, k.account_id, k.spend_limit_micro, k.last_used_at, a.plan, a.timezone,
           EXISTS (SELECT 1 FROM users u WHERE u.account_id = a.id AND u.role = 'admin') AS admin
    FROM api_keys k JOIN accounts a ON a.id = k.account_id
    WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND a.disabled_at IS NULL
), touched AS (
    UPDATE api_keys SET last_used_at = $2
    FROM found
    WHERE api_keys.id = found.id AND (found.last_used_at IS NULL OR found.last_used_at < $3)
)
SELECT id, account_id, spend_limit_micro, plan, timezone, admin FROM found
"""


def _identity(row: asyncpg.Record) -> Identity:
    """A verified key's identity from its api_keys row joined with its account's."""
    return Identity(
        account_id=row["account_id"],
        key_id=row["id"],
        plan=row["plan"],
        timezone=row["timezone"],
        spend_limit_micro=row["spend_limit_micro"],
        admin=row["admin"],
    )


class AccountStore:
    """`verify_pool`: a plain asyncpg pool to the same database (lexora_db.engine.create_asyncpg_pool),
    for key verification, the one call on a request's path (on a gateway's cache miss); everything
    else goes through the engine."""

    def __init__(self, engine: AsyncEngine, pepper: str, key_prefix: str, verify_pool: asyncpg.Pool):
        self._engine = engine
        self._pepper = pepper
        self._key_prefix = key_prefix
        self._verify_pool = verify_pool

    async def create_account(self, plan: Plan, name: str | None, timezone: str) -> CreateAccountReply:
        now = datetime.now(UTC)
        account_id = keys.new_id("acct")
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(accounts).values(id=account_id, name=name, plan=plan, timezone=timezone, created_at=now)
            )
            key = await self._insert_key(conn, account_id, None, None, now)
        return CreateAccountReply(account_id=account_id, key_id=key.key_id, api_key=key.api_key, plan=plan)

    async def create_key(self, account_id: str, name: str | None, spend_limit_micro: int | None) -> CreateKeyReply:
        async with self._engine.begin() as conn:
            exists = (await conn.execute(select(accounts.c.id).where(accounts.c.id == account_id))).first()
            if exists is None:
                raise NotFound(f"No account {account_id}")
            return await self._insert_key(conn, account_id, name, spend_limit_micro, datetime.now(UTC))

    async def _insert_key(
        self, conn: AsyncConnection, account_id: str, name: str | None, spend_limit_micro: int | None, now: datetime
    ) -> CreateKeyReply:
        key_id = keys.new_id("key")
        api_key = keys.new_api_key(self._key_prefix)
        prefix = keys.display_prefix(self._key_prefix, api_key)
        await conn.execute(
            insert(api_keys).values(
                id=key_id,
                account_id=account_id,
                key_hash=keys.hash_api_key(self._pepper, api_key),
                display_prefix=prefix,
                name=name,
                spend_limit_micro=spend_limit_micro,
                created_at=now,
            )
        )
        return CreateKeyReply(key_id=key_id, api_key=api_key, display_prefix=prefix)

    async def list_keys(self, account_id: str) -> list[KeyInfo]:
        query = select(api_keys).where(api_keys.c.account_id == account_id).order_by(api_keys.c.created_at)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            KeyInfo(
                key_id=row.id,
                name=row.name,
                display_prefix=row.display_prefix,
                created_at=row.created_at,
                last_used_at=row.last_used_at,
                revoked_at=row.revoked_at,
                spend_limit_micro=row.spend_limit_micro,
            )
            for row in rows
        ]

    async def revoke_key(self, key_id: str, account_id: str | None) -> bool:
        """Returns False when the key was already revoked."""
        condition = [api_keys.c.id == key_id]
        if account_id is not None:
            condition.append(api_keys.c.account_id == account_id)
        async with self._engine.begin() as conn:
            found = (await conn.execute(select(api_keys.c.revoked_at).where(*condition))).first()
            if found is None:
                raise NotFound(f"No key {key_id}" + (f" on account {account_id}" if account_id else ""))
            if found.revoked_at is not None:
                return False
            await conn.execute(update(api_keys).where(*condition).values(revoked_at=datetime.now(UTC)))
        return True

    async def identify(self, api_key: str) -> Identity | None:
        if not api_key.startswith(self._key_prefix):
            return None
        key_hash = keys.hash_api_key(self._pepper, api_key)
        # Gateways cache verifications, so a key in steady use is verified about every half minute
        # per gateway: that is the precision of "last used", and it costs no write on the hot path.
        now = datetime.now(UTC)
        found = await on_pooled_connection(
            self._verify_pool, lambda conn: conn.fetchrow(IDENTIFY, key_hash, now, now - LAST_USE_PRECISION)
        )
        return None if found is None else _identity(found)

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(select(1))
