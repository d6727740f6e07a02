"""A private Postgres cluster for the benchmark: initdb + pg_ctl on a free loopback port.

Same approach as the test suite (tests/support/postgres.py), kept here so the harness does not
import test code. Durability settings are left at Postgres' defaults (fsync and synchronous
commit on, as in production) unless BENCH_PG_FSYNC=off.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lexora_dev.processes import free_port, tcp_open, wait_until


def bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise FileNotFoundError("Postgres server binaries not found (apt-get install -y postgresql)")


def version() -> str:
    out = subprocess.run([str(bin_dir() / "postgres"), "--version"], capture_output=True, text=True)
    return out.stdout.strip()


def _as_postgres_user(argv: list[str]) -> list[str]:
    # initdb refuses to run as root; as root the server runs as the 'postgres' user.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def private_postgres(root: Path, fsync: bool = True) -> Iterator[tuple[str, str]]:
    """Yields (SQLAlchemy asyncpg URL, libpq URL) of a fresh database under `root`."""
    bindir = bin_dir()
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
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=300"
    if not fsync:
        options += " -c fsync=off -c synchronous_commit=off"
    run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log"), "-o", options, "start"])
    try:
        wait_until(lambda: tcp_open(port), 30, "postgres")
        run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "lexora", "lexora"])
        yield (
            f"postgresql+asyncpg://lexora@127.0.0.1:{port}/lexora",
            f"postgresql://lexora@127.0.0.1:{port}/lexora",
        )
    finally:
        subprocess.run(
            _as_postgres_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            cwd=root,
        )


def postmaster_pid(root: Path) -> int | None:
    try:
        return int((root / "data" / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
