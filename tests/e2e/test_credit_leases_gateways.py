"""Two gateway processes covering one account's requests from credit leases: the wiring end to end,
without an engine. auth, billing, usage and two gateways run as `lexora dev` runs them (NATS with
every principal's permissions, no database URL for the gateways); the model is a priced chat model
whose endpoint is ready in the registry while no router runs, so every admitted job is the
gateway's own "no router took it" (503): covered from the replica's lease, recorded at cost 0 with
its lease id, counted by billing against that lease. The gateways are then stopped (SIGTERM) and
return what they hold: every lease closes, nothing is held, nothing was charged."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from lexora_auth.client import AuthClient
from lexora_billing.client import BillingClient
from lexora_cli.accounts import open_funded_account
from lexora_contracts import subjects
from lexora_contracts.nats_permissions import ADMIN, DEV, GATEWAY
from lexora_contracts.registry import Endpoint
from lexora_db.engine import create_engine
from lexora_dev import stack
from lexora_dev.catalog import LOCAL_CHAT_MODEL, local_catalog
from lexora_dev.processes import ManagedProcess, free_port, wait_until
from lexora_runtime.bus import connect

CREDIT_MICRO = 400  # a few requests' worst case at a time


class Gateways:
    def __init__(self, root: Path, database_url: str):
        self.root, self.database_url = root, database_url
        self.users = stack.local_nats_users(root)
        port = free_port()
        self.processes: dict[str, ManagedProcess] = {"nats": stack.start_nats(root, port, users=self.users)}
        self.config = stack.ServiceConfig(
            nats_url=f"nats://127.0.0.1:{port}",
            database_url=database_url,
            state_dir=root,
            gateway_port=0,
            nats_users=self.users,
            extra_env={"LEXORA_SETTLE_GATHER_S": "0.01", "LEXORA_RECORD_GATHER_S": "0.01"},
        )
        stack.publish_catalog(
            self.config.nats_url,
            local_catalog(Endpoint(name="nowhere", grpc_address="127.0.0.1:1")),
            self.users.access(DEV),
        )
        for service in ("auth", "billing", "usage"):
            self.processes[service] = stack.start_service(service, self.config)
        for service, subject in (("auth", subjects.AUTH_HEALTH), ("billing", subjects.BILLING_HEALTH)):
            stack.wait_for_service(
                self.config.nats_url, subject, self.processes[service], access=self.users.access(GATEWAY)
            )
        self.ports: list[int] = []
        for name in ("gateway-a", "gateway-b"):
            port = free_port()
            ready = functools.partial(_ready, port)
            # Leases are returned at shutdown only (not when idle), so the shutdown is what is tested.
            env = {**self.config.extra_env, "LEXORA_LEASE_IDLE_S": "600"}
            config = stack.ServiceConfig(**{**self.config.__dict__, "gateway_port": port, "extra_env": env})
            self.processes[name] = stack.start_service("gateway", config, name)
            wait_until(ready, 60, name, self.processes[name])  # no router: /v1/health says so
            self.ports.append(port)

    def api_key(self, credit_micro: int) -> tuple[str, str]:
        async def create() -> tuple[str, str]:
            nc = await connect(self.config.nats_url, "tests", self.users.access(ADMIN))
            try:
                funded = await open_funded_account(
                    AuthClient(nc), BillingClient(nc), credit_micro, plan="enterprise", actor="tests", reason="t"
                )
                return funded.account.account_id, funded.account.api_key
            finally:
                await nc.drain()

        return asyncio.run(create())

    def query(self, sql: str, **params: object) -> list[dict]:
        async def run() -> list[dict]:
            engine = create_engine(self.database_url)
            try:
                async with engine.connect() as conn:
                    return [dict(r) for r in (await conn.execute(text(sql), params)).mappings().all()]
            finally:
                await engine.dispose()

        return asyncio.run(run())

    def violations(self) -> list[str]:
        log = (self.root / "logs" / "nats.log").read_text(errors="replace")
        return [line for line in log.splitlines() if "Violation" in line]

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()


@pytest.fixture
def gateways(database_url: str, tmp_path: Path) -> Iterator[Gateways]:
    running = Gateways(tmp_path / "gateways", database_url)
    try:
        yield running
    finally:
        running.stop()


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _until(check, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_two_gateway_processes_cover_jobs_from_leases_and_return_them_at_shutdown(gateways: Gateways) -> None:
    account, api_key = gateways.api_key(CREDIT_MICRO)
    body = {"model": LOCAL_CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 64}

    def chat(n: int) -> int:
        port = gateways.ports[n % 2]
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=60,
        )
        return reply.status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(chat, range(60)))
    assert set(statuses) <= {503, 402} and 503 in statuses, statuses

    def recorded() -> bool:
        rows = gateways.query("SELECT COUNT(*) AS n FROM usage_records WHERE account_id = :a", a=account)
        return rows[0]["n"] == len(statuses)

    _until(recorded)
    leases = gateways.query("SELECT holder, settled_requests FROM credit_leases WHERE account_id = :a", a=account)
    assert len({lease["holder"] for lease in leases}) == 2, "each gateway process holds its own leases"
    counted = sum(lease["settled_requests"] for lease in leases)
    assert counted == statuses.count(503), "every covered job's event was counted against its lease"

    held = gateways.query("SELECT held_micro FROM balances WHERE account_id = :a", a=account)[0]["held_micro"]
    assert held > 0, "the gateways still hold their leases"
    for name in ("gateway-a", "gateway-b"):
        gateways.processes[name].stop()  # SIGTERM: the gateway returns its leases

    def closed() -> bool:
        still = gateways.query("SELECT id FROM credit_leases WHERE account_id = :a AND status <> 'closed'", a=account)
        return not still

    _until(closed)
    [balance] = gateways.query("SELECT balance_micro, held_micro FROM balances WHERE account_id = :a", a=account)
    assert (balance["balance_micro"], balance["held_micro"]) == (CREDIT_MICRO, 0), "nothing held, nothing charged"
    assert not gateways.violations()
