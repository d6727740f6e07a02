"""Database engines for SQLite (embedded default) and Postgres, and schema migration."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.expression import Insert

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

T = TypeVar("T")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str) -> AsyncEngine:
    if is_sqlite(url):
        _ensure_sqlite_dir(url)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Several service processes share one file: WAL lets readers run beside the single writer,
    # and busy_timeout makes a writer wait for the lock instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _ensure_sqlite_dir(url: str) -> None:
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def insert_ignoring_duplicates(url: str, table: Any) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING in the engine's dialect (the idempotent write)."""
    dialect = sqlite if is_sqlite(url) else postgresql
    return dialect.insert(table).on_conflict_do_nothing()


# What a connection lost under a statement raises (the statement did not run, or its outcome is
# unknown to the caller).
CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    OSError,
)


async def on_pooled_connection(pool: asyncpg.Pool, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """`work` on a connection from `pool`, run once more on a fresh one when the first turns out
    lost (Postgres restarted since it was opened), for work that may safely run twice."""
    try:
        async with pool.acquire() as conn:
            return await work(conn)
    except CONNECTION_LOST:
        async with pool.acquire() as conn:
            return await work(conn)


# Options of SQLAlchemy's asyncpg adapter that asyncpg.connect() itself does not take.
_ADAPTER_ONLY_OPTIONS = ("prepared_statement_cache_size", "prepared_statement_name_func", "async_fallback")


async def create_asyncpg_pool(
    engine: AsyncEngine, min_size: int = 1, max_size: int = 10, server_settings: dict[str, str] | None = None
) -> asyncpg.Pool:
    """A plain asyncpg pool to the same Postgres database as `engine`, for hot paths that skip
    SQLAlchemy (no statement building, no pre-ping round trip per checkout). Statements run on it
    are prepared once per connection by asyncpg's statement cache. `server_settings`: session
    settings of every connection of the pool."""
    _, options = engine.dialect.create_connect_args(engine.url)
    for name in _ADAPTER_ONLY_OPTIONS:
        options.pop(name, None)
    if server_settings:
        options["server_settings"] = {**options.get("server_settings", {}), **server_settings}
    # Nothing a hot path runs changes session state, so a released connection needs no reset
    # query (asyncpg's default reset is one more round trip per checkout).
    return await asyncpg.create_pool(min_size=min_size, max_size=max_size, reset=_no_reset, **options)


async def _no_reset(_connection: asyncpg.Connection) -> None:
    return None


def migrate(url: str) -> None:
    """Bring the schema to the newest revision (alembic; works for both dialects)."""
    from alembic import command
    from alembic.config import Config

    if is_sqlite(url):
        _ensure_sqlite_dir(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    command.upgrade(config, "head")
