"""Engines and pools on the Postgres database (SQLAlchemy for the cold paths, plain asyncpg for the
hot ones), and schema migration."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

T = TypeVar("T")


def create_engine(url: str) -> AsyncEngine:
    """A SQLAlchemy engine on `url` (`postgresql+asyncpg://...`)."""
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


# What a connection lost under a statement raises (the statement did not run, or its outcome is
# unknown to the caller).
CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    OSError,
)


# ... and what a server that is down, starting or shutting down answers a new connection.
_SERVER_UNAVAILABLE = (
    *CONNECTION_LOST,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.CrashShutdownError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection came free in time
)


def database_unreachable(exc: BaseException) -> bool:
    """Whether `exc` (raised by asyncpg, or by SQLAlchemy around it) says the database cannot be
    reached right now — down, restarting, refusing connections — rather than that a statement
    failed on its own. Such failures are answered 503, not 500 (lexora_contracts ServiceUnavailable)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, _SERVER_UNAVAILABLE):
            return True
        if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
            return True
        pending += [error.__cause__, error.__context__, getattr(error, "orig", None)]
    return False


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
    """Bring the schema to the newest revision (alembic)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    command.upgrade(config, "head")
