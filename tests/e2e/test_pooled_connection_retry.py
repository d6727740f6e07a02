"""Work on a plain asyncpg pool survives Postgres closing the connection under it, once: the
mechanism under a gateway's credit hold and auth's key verification (lexora_db.engine)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from lexora_db.engine import CONNECTION_LOST, create_asyncpg_pool, create_engine, on_pooled_connection


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    engine = create_engine(postgres_url)
    pool = await create_asyncpg_pool(engine, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()
        await engine.dispose()


async def _terminate_own_backend(conn: asyncpg.Connection) -> None:
    """What a Postgres restart does to a pooled connection, from the inside."""
    await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")


async def test_work_whose_connection_is_lost_runs_again_on_a_fresh_one(pool: asyncpg.Pool) -> None:
    backends: list[int] = []

    async def work(conn: asyncpg.Connection) -> int:
        backends.append(await conn.fetchval("SELECT pg_backend_pid()"))
        if len(backends) == 1:
            await _terminate_own_backend(conn)
        return await conn.fetchval("SELECT 41 + 1")

    assert await on_pooled_connection(pool, work) == 42
    assert len(backends) == 2 and backends[0] != backends[1], backends


async def test_a_second_lost_connection_is_raised_not_retried_again(pool: asyncpg.Pool) -> None:
    attempts = 0

    async def work(conn: asyncpg.Connection) -> None:
        nonlocal attempts
        attempts += 1
        await _terminate_own_backend(conn)

    with pytest.raises(CONNECTION_LOST):
        await on_pooled_connection(pool, work)
    assert attempts == 2


async def test_an_error_of_the_statement_itself_is_not_retried(pool: asyncpg.Pool) -> None:
    attempts = 0

    async def work(conn: asyncpg.Connection) -> None:
        nonlocal attempts
        attempts += 1
        await conn.execute("SELECT 1 / 0")

    with pytest.raises(asyncpg.DivisionByZeroError):
        await on_pooled_connection(pool, work)
    assert attempts == 1
