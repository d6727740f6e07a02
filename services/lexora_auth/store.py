"""Accounts and keys in the database (auth owns the accounts and api_keys tables)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lexora_auth import keys
from lexora_contracts.messages import CreateAccountReply, Identity, Plan
from lexora_runtime.schema import accounts, api_keys


class AccountStore:
    def __init__(self, engine: AsyncEngine, pepper: str, key_prefix: str):
        self._engine = engine
        self._pepper = pepper
        self._key_prefix = key_prefix

    async def create_account(self, plan: Plan, name: str | None, timezone: str) -> CreateAccountReply:
        now = datetime.now(UTC)
        account_id = keys.new_id("acct")
        key_id = keys.new_id("key")
        api_key = keys.new_api_key(self._key_prefix)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(accounts).values(id=account_id, name=name, plan=plan, timezone=timezone, created_at=now)
            )
            await conn.execute(
                insert(api_keys).values(
                    id=key_id,
                    account_id=account_id,
                    key_hash=keys.hash_api_key(self._pepper, api_key),
                    display_prefix=keys.display_prefix(self._key_prefix, api_key),
                    created_at=now,
                )
            )
        return CreateAccountReply(account_id=account_id, key_id=key_id, api_key=api_key, plan=plan)

    async def identify(self, api_key: str) -> Identity | None:
        if not api_key.startswith(self._key_prefix):
            return None
        key_hash = keys.hash_api_key(self._pepper, api_key)
        query = (
            select(api_keys.c.id, api_keys.c.account_id, accounts.c.plan, accounts.c.timezone)
            .join(accounts, accounts.c.id == api_keys.c.account_id)
            .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return Identity(account_id=row.account_id, key_id=row.id, plan=row.plan, timezone=row.timezone)

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(select(1))
