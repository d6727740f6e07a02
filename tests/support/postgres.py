"""A private Postgres cluster for the tests: initdb + pg_ctl on a free port, removed afterwards."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lexora_dev.processes import free_port, tcp_open, wait_until


def postgres_bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise FileNotFoundError("Postgres server binaries not found (apt-get install -y postgresql)")


def _as_postgres_user(argv: list[str]) -> list[str]:
    # initdb refuses to run as root; as root we run the server as the 'postgres' user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@contextmanager
def private_postgres() -> Iterator[str]:
    """Yields an asyncpg SQLAlchemy URL of a fresh database."""
    bin_dir = postgres_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="lexora-pg-"))
    data = root / "data"
    port = free_port()
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    root.chmod(0o755)
    run = lambda argv: subprocess.run(  # noqa: E731
        _as_postgres_user(argv), check=True, capture_output=True, cwd=root
    )
    run([str(bin_dir / "initdb"), "-D", str(data), "-U", "lexora", "--auth=trust", "-E", "UTF8"])
    run(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "postgres.log"),
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off",
            "start",
        ]
    )
    try:
        wait_until(lambda: tcp_open(port), 30, "postgres")
        run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "lexora", "lexora"])
        yield f"postgresql+asyncpg://lexora@127.0.0.1:{port}/lexora"
    finally:
        subprocess.run(
            _as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            cwd=root,
        )
        shutil.rmtree(root, ignore_errors=True)
