"""The alembic migrations produce exactly the schema the code declares, on both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from lexora_runtime.db import create_engine, migrate
from lexora_runtime.schema import metadata


def schema_drift(url: str) -> list:
    async def compare() -> list:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
        finally:
            await engine.dispose()

    return asyncio.run(compare())


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_migrations_match_the_declared_schema(dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}" if dialect == "sqlite" else None
    if url is None:
        base = request.getfixturevalue("postgres_url")
        url = base.rsplit("/", 1)[0] + "/postgres"  # a database of its own, untouched by the stacks
        asyncio.run(_recreate_schema(url))
    migrate(url)
    migrate(url)  # idempotent
    assert schema_drift(url) == []


async def _recreate_schema(url: str) -> None:
    from sqlalchemy import text

    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()
