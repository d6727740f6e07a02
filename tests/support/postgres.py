"""The tests' private Postgres: the shared cluster starter, in a temporary directory, without fsync."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lexora_dev.postgres import private_postgres as start_cluster


@contextmanager
def private_postgres() -> Iterator[str]:
    """Yields an asyncpg SQLAlchemy URL of a fresh database."""
    root = Path(tempfile.mkdtemp(prefix="lexora-pg-"))
    try:
        with start_cluster(root, fsync=False, max_connections=200) as cluster:
            yield cluster.url
    finally:
        shutil.rmtree(root, ignore_errors=True)
