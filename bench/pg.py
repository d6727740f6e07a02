"""A private Postgres cluster for the benchmarks, started by lexora_dev.postgres.private_postgres
(the test suite's starter, which also finds the server's binaries: the benchmarks install none of
their own). Durability settings are left at Postgres' defaults (fsync and synchronous commit on, as
in production) unless BENCH_PG_FSYNC=off.

What the benchmarks need beyond the URLs, the server's version and its postmaster's process id,
are asked of the running server, so they hold wherever its binaries and data directory are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from lexora_dev.postgres import private_postgres as start_cluster


@dataclass(frozen=True)
class BenchPostgres:
    url: str  # SQLAlchemy (asyncpg)
    libpq_url: str
    version: str  # e.g. "PostgreSQL 15.18 (Debian 15.18-0+deb12u1)"
    postmaster_pid: int | None  # the root of the server's process tree (CPU and memory are summed over it)


async def _ask(libpq_url: str) -> tuple[str, Path]:
    conn = await asyncpg.connect(libpq_url)
    try:
        return await conn.fetchval("SHOW server_version"), Path(await conn.fetchval("SHOW data_directory"))
    finally:
        await conn.close()


def _postmaster_pid(data_directory: Path) -> int | None:
    try:
        return int((data_directory / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def private_postgres(root: Path, fsync: bool = True) -> Iterator[BenchPostgres]:
    """A fresh cluster with a `lexora` database under `root`, stopped on exit."""
    with start_cluster(root, fsync=fsync) as cluster:
        version, data_directory = asyncio.run(_ask(cluster.libpq_url))
        yield BenchPostgres(
            url=cluster.url,
            libpq_url=cluster.libpq_url,
            version=f"PostgreSQL {version}",
            postmaster_pid=_postmaster_pid(data_directory),
        )
