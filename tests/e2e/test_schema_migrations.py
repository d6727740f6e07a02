"""The alembic migrations produce exactly the schema the code declares."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from lexora_db.engine import create_engine, migrate
from lexora_db.schema import metadata
from support.postgres import fresh_database


def schema_drift(url: str) -> list:
    async def compare() -> list:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
        finally:
            await engine.dispose()

    return asyncio.run(compare())


def test_migrations_match_the_declared_schema(postgres_url: str) -> None:
    url = fresh_database(postgres_url, "migrations")  # a database of its own, untouched by the stacks
    migrate(url)
    migrate(url)  # idempotent
    assert schema_drift(url) == []
