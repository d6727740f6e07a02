"""The tests' Postgres: a database of their own on the server DATABASE_URL names, else a private
embedded cluster (the shared cluster starter, in a temporary directory, without fsync)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text

from lexora_db.engine import create_engine
from lexora_dev.postgres import private_postgres as start_cluster


@contextmanager
def private_postgres() -> Iterator[str]:
    """Yields an asyncpg SQLAlchemy URL of a fresh database."""
    server = os.environ.get("DATABASE_URL")
    if server:
        yield fresh_database(server, "lexora_tests")
        return
    root = Path(tempfile.mkdtemp(prefix="lexora-pg-"))
    try:
        with start_cluster(root, fsync=False, max_connections=200) as cluster:
            yield cluster.url
    finally:
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(base_url: str, prefix: str) -> str:
    """A new empty database on the cluster of `base_url`; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        engine = create_engine(base_url)
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"CREATE DATABASE {name}"))
        await engine.dispose()

    asyncio.run(create())
    return base_url.rsplit("/", 1)[0] + f"/{name}"
