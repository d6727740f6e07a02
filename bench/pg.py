"""A private Postgres cluster for the benchmark: initdb + pg_ctl on a free loopback port.

The cluster starter is shared with the test suite (lexora_dev.postgres). Durability settings are
left at Postgres' defaults (fsync and synchronous commit on, as in production) unless
BENCH_PG_FSYNC=off.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lexora_dev.postgres import postgres_bin_dir
from lexora_dev.postgres import private_postgres as start_cluster


def version() -> str:
    out = subprocess.run([str(postgres_bin_dir() / "postgres"), "--version"], capture_output=True, text=True)
    return out.stdout.strip()


@contextmanager
def private_postgres(root: Path, fsync: bool = True) -> Iterator[tuple[str, str]]:
    """Yields (SQLAlchemy asyncpg URL, libpq URL) of a fresh database under `root`."""
    with start_cluster(root, fsync=fsync) as cluster:
        yield cluster.url, cluster.libpq_url


def postmaster_pid(root: Path) -> int | None:
    try:
        return int((root / "data" / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
