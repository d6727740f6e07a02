"""A running Lexora stack for end-to-end tests, with helpers that act as an operator would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from lexora_auth.client import AuthClient
from lexora_billing.client import BillingClient
from lexora_cli.accounts import open_funded_account
from lexora_contracts.messages import Balance
from lexora_contracts.nats_permissions import ADMIN, DEV
from lexora_contracts.registry import Endpoint, ModelRecord
from lexora_db.engine import create_engine
from lexora_dev import stack
from lexora_dev.catalog import local_catalog
from lexora_dev.processes import ManagedProcess, free_port
from lexora_runtime.bus import NatsAccess, connect

# The platform's model name patterns in the test stack (LEXORA_MODEL_ALIASES): what Claude Code
# asks for by name is served by the local chat model.
MODEL_ALIASES_TEST_ENV = {
    "LEXORA_MODEL_ALIASES": json.dumps({"claude-*-haiku-*": "HuggingFaceTB/SmolLM2-135M-Instruct"}),
}

# A prompt the local model answers at length: for timeouts and disconnects mid-stream.
LONG_JOB = [{"role": "user", "content": "Write a very long and detailed story about a dragon and a knight."}]


def stream_long_job(base_url: str, api_key: str, max_tokens: int) -> Any:
    """A raw streaming chat request (httpx), to read the SSE events or hang up part-way."""
    import httpx

    from lexora_dev.catalog import LOCAL_CHAT_MODEL

    return httpx.stream(
        "POST",
        f"{base_url}/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={
            "model": LOCAL_CHAT_MODEL,
            "messages": LONG_JOB,
            "max_tokens": max_tokens,
            "stream": True,
            "temperature": 0,
        },
        timeout=60,
    )


@dataclass
class Account:
    account_id: str
    api_key: str


# The test harness's own NATS user, with every permission: tests play every role (publish usage
# events, read and change the registry). Each service and the admin CLI keep their own users.
TESTS_NATS_USER = "tests"


@dataclass
class RunningStack:
    name: str
    config: stack.ServiceConfig
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    nats_monitor_port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.config.gateway_port}/v1"

    @property
    def nats_users(self) -> stack.NatsUsers:
        assert self.config.nats_users is not None
        return self.config.nats_users

    @property
    def nats_url(self) -> str:
        """The server's URL with the test harness's credentials in it, for `nats.connect(url)`."""
        password = self.nats_users.passwords[TESTS_NATS_USER]
        return self.config.nats_url.replace("nats://", f"nats://{TESTS_NATS_USER}:{password}@", 1)

    @property
    def admin_access(self) -> NatsAccess:
        return self.nats_users.access(ADMIN)

    def nats_violations(self) -> list[str]:
        """The publishes and subscriptions nats-server refused so far (its log), any user's."""
        log = self.config.state_dir / "logs" / "nats.log"
        return [line for line in log.read_text(errors="replace").splitlines() if "Violation" in line]

    @property
    def database_url(self) -> str:
        return self.config.database_url

    # ---- acting as the operator ----------------------------------------------------------------
    def create_account(self, credits_micro: int = 5_000_000, plan: str = "enterprise") -> Account:
        """An account with credit; unlimited by default so only the rate-limit tests meet limits."""

        async def create() -> Account:
            nc = await connect(self.config.nats_url, "tests", self.admin_access)
            try:
                funded = await open_funded_account(
                    AuthClient(nc), BillingClient(nc), credits_micro, plan=plan, actor="tests", reason="test credit"
                )
                return Account(funded.account.account_id, funded.account.api_key)
            finally:
                await nc.drain()

        return asyncio.run(create())

    def balance(self, account_id: str) -> Balance:
        async def get() -> Balance:
            nc = await connect(self.config.nats_url, "tests", self.admin_access)
            try:
                return await BillingClient(nc).balance(account_id)
            finally:
                await nc.drain()

        return asyncio.run(get())

    def settled_balance(self, account_id: str, timeout: float = 15.0) -> Balance:
        """The balance once every hold of the account is settled (settlement is asynchronous)."""
        deadline = time.monotonic() + timeout
        while True:
            balance = self.balance(account_id)
            if balance.held_micro == 0 or time.monotonic() > deadline:
                return balance
            time.sleep(0.1)

    def query(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        async def run() -> list[dict[str, Any]]:
            engine = create_engine(self.database_url)
            try:
                async with engine.connect() as conn:
                    rows = (await conn.execute(text(sql), params)).mappings().all()
                    return [dict(row) for row in rows]
            finally:
                await engine.dispose()

        return asyncio.run(run())

    def usage_rows(self, account_id: str) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM usage_records WHERE account_id = :a ORDER BY received_at", a=account_id)

    def wait_for_usage_rows(self, account_id: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        rows = self.usage_rows(account_id)
        while len(rows) < count and time.monotonic() < deadline:
            time.sleep(0.2)
            rows = self.usage_rows(account_id)
        return rows

    def wait_for_served(
        self, account_id: str, endpoint: str, timeout: float = 30.0
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(the account's answered rows on `endpoint`, all its rows), once there is one answered row
        or `timeout` passed. A client may make several requests, each recorded on its own and in any
        order: this waits for the one that answered rather than for the first row."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.usage_rows(account_id)
            served = [r for r in rows if r["status_code"] == 200 and r["endpoint"] == endpoint]
            if served or time.monotonic() > deadline:
                return served, rows
            time.sleep(0.2)

    def assert_ledger_consistent(self, account_id: str) -> None:
        """The balances row is exactly what the ledger entries re-derive, and never negative.

        One statement, so one snapshot: billing may be settling this account meanwhile, and two
        reads could straddle its commit."""
        [row] = self.query(
            "SELECT b.balance_micro, b.held_micro, "
            "(SELECT COALESCE(SUM(e.amount_micro), 0) FROM ledger_entries e WHERE e.account_id = :a) AS balance, "
            "(SELECT COALESCE(SUM(e.held_delta_micro), 0) FROM ledger_entries e WHERE e.account_id = :a) AS held "
            "FROM balances b WHERE b.account_id = :a",
            a=account_id,
        )
        assert (row["balance_micro"], row["held_micro"]) == (row["balance"], row["held"])
        assert row["balance_micro"] >= 0 and row["held_micro"] >= 0

    def ledger_charges(self, account_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT * FROM ledger_entries WHERE account_id = :a AND kind = 'charge' ORDER BY id", a=account_id
        )

    # ---- processes -----------------------------------------------------------------------------
    def start(self, service: str, log_name: str | None = None, **extra_env: str) -> ManagedProcess:
        config = self.config
        if extra_env:
            config = stack.ServiceConfig(**{**config.__dict__, "extra_env": {**config.extra_env, **extra_env}})
        process = stack.start_service(service, config, log_name)
        self.processes[log_name or service] = process
        return process

    def start_gateway(self, job_timeout_s: float | None = None, **extra_env: str) -> str:
        """Another gateway replica on the same platform (its own port and settings); returns its /v1 URL."""
        from lexora_dev.processes import free_port

        port = free_port()
        changes: dict[str, Any] = {"gateway_port": port, "extra_env": {**self.config.extra_env, **extra_env}}
        if job_timeout_s is not None:
            changes["job_timeout_s"] = job_timeout_s
        name = f"gateway-{port}"
        process = stack.start_service("gateway", stack.ServiceConfig(**{**self.config.__dict__, **changes}), name)
        self.processes[name] = process
        stack.wait_for_gateway(port, process)
        return f"http://127.0.0.1:{port}/v1"

    def registry_record(self, model_id: str) -> ModelRecord:
        """A model's record in the registry, as the operator (or lexora dev) published it."""
        import nats

        from lexora_runtime.model_registry import registry_bucket

        async def read() -> ModelRecord:
            nc = await nats.connect(self.nats_url)
            try:
                entry = await (await registry_bucket(nc.jetstream())).get(model_id)
                return ModelRecord.model_validate_json(entry.value)
            finally:
                await nc.drain()

        return asyncio.run(read())

    def admin_cli(self, *args: str) -> dict[str, Any]:
        result = subprocess.run(
            [sys.executable, "-m", "lexora_cli", "admin", *args],
            env={**os.environ, "LEXORA_NATS_URL": self.config.nats_url, **self.nats_users.env_for(ADMIN)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def nats_subscriptions(self, connection_name: str) -> int:
        """How many subscriptions a client holds, from nats-server's monitoring endpoint."""
        import httpx

        connz = httpx.get(f"http://127.0.0.1:{self.nats_monitor_port}/connz?subs=1").json()
        return sum(c.get("subscriptions", 0) for c in connz["connections"] if c.get("name") == connection_name)

    def logs(self) -> str:
        return "\n".join(p.log_path.read_text(errors="replace") for p in self.processes.values())


@contextlib.contextmanager
def running_stack(
    name: str,
    database_url: str,
    state_dir: Path,
    triton_endpoint: Endpoint,
    catalog: list[ModelRecord] | None = None,
    extra_env: dict[str, str] | None = None,
    job_timeout_s: float = 120.0,
) -> Iterator[RunningStack]:
    """The platform on real components, started as `lexora dev` starts it: NATS, the database, the
    catalog (by default every local model on `triton_endpoint`), the five services, then a warm-up
    request to every model, which must answer. The tritonserver behind `triton_endpoint`, and its
    model recovery (one per server), are the caller's. NATS runs with a user per service, each
    limited to its permissions (lexora_contracts.nats_permissions); the stack fails at its end if
    nats-server refused any publish or subscription meanwhile."""
    nats_port, monitor_port = free_port(), free_port()
    users = stack.local_nats_users(state_dir, unrestricted=(TESTS_NATS_USER,))
    nats_process = stack.start_nats(state_dir, nats_port, monitor_port, users=users)
    config = stack.ServiceConfig(
        nats_url=f"nats://127.0.0.1:{nats_port}",
        database_url=database_url,
        state_dir=state_dir,
        gateway_port=free_port(),
        job_timeout_s=job_timeout_s,
        log_level="INFO",
        extra_env=extra_env or {},
        nats_users=users,
    )
    running = RunningStack(name, config, {"nats": nats_process}, nats_monitor_port=monitor_port)
    try:
        stack.prepare_database(database_url)
        catalog = local_catalog(triton_endpoint) if catalog is None else catalog
        stack.publish_catalog(config.nats_url, catalog, users.access(DEV))
        services_started = time.time()
        for service in stack.SERVICES:
            running.start(service)
        stack.wait_for_gateway(config.gateway_port, running.processes["gateway"])
        failing = stack.wait_for_warm_up(config.nats_url, catalog, since=services_started, access=users.access(DEV))
        assert not failing, f"models failed their warm-up request: {failing}"
        yield running
        violations = running.nats_violations()
        assert not violations, "nats-server refused these (a subject missing from nats_permissions?):\n" + "\n".join(
            violations[:20]
        )
    finally:
        for process in reversed(list(running.processes.values())):
            process.stop()
