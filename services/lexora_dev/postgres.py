"""A private Postgres cluster (initdb + pg_ctl on a free loopback port), for tests and benchmarks."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lexora_dev.processes import free_port, tcp_open, wait_until


@dataclass(frozen=True)
class PostgresCluster:
    url: str  # SQLAlchemy (asyncpg)
    libpq_url: str
    root: Path


def postgres_bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise FileNotFoundError("Postgres server binaries not found (apt-get install -y postgresql)")


def _as_postgres_user(argv: list[str]) -> list[str]:
    # initdb refuses to run as root; as root the server runs as the 'postgres' user.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def private_postgres(root: Path, fsync: bool = True, max_connections: int = 300) -> Iterator[PostgresCluster]:
    """A fresh cluster with a `lexora` database under `root`, stopped on exit. fsync=False trades
    durability for speed (tests); the default keeps Postgres' production settings."""
    bindir = postgres_bin_dir()
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    port = free_port()
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    root.chmod(0o755)

    def run(argv: list[str]) -> None:
        subprocess.run(_as_postgres_user(argv), check=True, capture_output=True, cwd=root)

    run([str(bindir / "initdb"), "-D", str(data), "-U", "lexora", "--auth=trust", "-E", "UTF8"])
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections={max_connections}"
    if not fsync:
        options += " -c fsync=off -c synchronous_commit=off"
    run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log"), "-o", options, "start"])
    try:
        wait_until(lambda: tcp_open(port), 30, "postgres")
        run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "lexora", "lexora"])
        yield PostgresCluster(
            url=f"postgresql+asyncpg://lexora@127.0.0.1:{port}/lexora",
            libpq_url=f"postgresql://lexora@127.0.0.1:{port}/lexora",
            root=root,
        )
    finally:
        subprocess.run(
            _as_postgres_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            cwd=root,
        )
