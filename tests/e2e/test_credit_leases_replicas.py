"""Two gateway replicas covering one account's requests from credit leases, against the real billing
service (a process), its settlement consumer, NATS with the platform's permissions, and Postgres.

Each replica is the gateway's own credit path (lexora_gateway.admission.credit_leases, connected as
the `gateway` NATS user, with its own holder id); the jobs' outcomes are published to JetStream as a
router publishes them (connected as the `router` user), the exact cost on the usage event and, as
the router's final chunk tells the gateway, to the replica. Hundreds of concurrent requests on an
account with little credit: no overdraft at any moment, exact totals, every lease returned and
closed, and the last cent can still be spent.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from sqlalchemy import text

from lexora_billing.client import BillingClient
from lexora_contracts import subjects
from lexora_contracts.errors import InsufficientCredits
from lexora_contracts.messages import Identity, UsageEvent
from lexora_contracts.money import PICO_PER_MICRO
from lexora_db.engine import create_engine
from lexora_dev import stack
from lexora_dev.processes import ManagedProcess, free_port
from lexora_gateway.admission.credit_leases import CreditLeases
from lexora_runtime.bus import ensure_usage_stream, publish_usage_event

GRANTED_MICRO = 10_000  # about half of what the requests would cost
WORST_MICRO = 100  # each request's worst case
REQUESTS = 400


class Stack:
    """nats-server (with every principal's permissions) and billing, on the test's database."""

    def __init__(self, root: Path, database_url: str):
        self.root = root
        self.users = stack.local_nats_users(root)
        port = free_port()
        self.nats = stack.start_nats(root, port, users=self.users)
        self.nats_url = f"nats://127.0.0.1:{port}"
        config = stack.ServiceConfig(
            nats_url=self.nats_url,
            database_url=database_url,
            state_dir=root,
            gateway_port=0,
            nats_users=self.users,
            extra_env={"LEXORA_SETTLE_GATHER_S": "0.01", "LEXORA_SWEEP_INTERVAL_S": "1"},
        )
        self.billing: ManagedProcess = stack.start_service("billing", config)
        stack.wait_for_service(
            self.nats_url, subjects.BILLING_HEALTH, self.billing, timeout=30, access=self.users.access("gateway")
        )

    async def connect(self, principal: str) -> nats.NATS:
        return await nats.connect(self.nats_url, **self.users.access(principal).options())

    def violations(self) -> list[str]:
        log = (self.root / "logs" / "nats.log").read_text(errors="replace")
        return [line for line in log.splitlines() if "Violation" in line]

    def stop(self) -> None:
        self.billing.stop()
        self.nats.stop()


@pytest.fixture
def running(database_url: str, tmp_path: Path) -> Iterator[Stack]:
    started = Stack(tmp_path / "stack", database_url)
    try:
        yield started
    finally:
        started.stop()


class Replica:
    """One gateway replica's credit path on its own NATS connection."""

    def __init__(self, nc: nats.NATS, name: str):
        self.nc = nc
        self.credit = CreditLeases(nc, BillingClient(nc), use_s=60.0, settle_within_s=60.0, holder=name)

    @classmethod
    async def start(cls, running: Stack, name: str) -> Replica:
        replica = cls(await running.connect("gateway"), name)
        await replica.credit.start()
        return replica

    async def stop(self) -> None:
        await self.credit.close()
        await self.nc.drain()


class Database:
    def __init__(self, url: str):
        self.engine = create_engine(url)

    async def rows(self, sql: str, **params: object) -> list[dict]:
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(text(sql), params)).mappings().all()]

    async def balance(self, account: str) -> dict:
        [row] = await self.rows(
            "SELECT balance_micro, held_micro, carry_pico FROM balances WHERE account_id = :a", a=account
        )
        return row


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    try:
        yield db
    finally:
        await db.engine.dispose()


async def _grant(running: Stack, account: str, micro: int) -> None:
    from lexora_contracts.messages import Balance, GrantRequest
    from lexora_runtime.bus import call

    nc = await running.connect("admin")
    try:
        grant = GrantRequest(
            account_id=account, amount_micro=micro, idempotency_key=uuid.uuid4().hex, actor="t", reason="t"
        )
        await call(nc, subjects.BILLING_CREDITS_GRANT, grant, Balance)
    finally:
        await nc.drain()


def _outcome(identity: Identity, request_id: str, lease_id: str, cost_pico: int) -> UsageEvent:
    return UsageEvent(
        request_id=request_id,
        account_id=identity.account_id,
        key_id=identity.key_id,
        model="test/model",
        status_code=200,
        prompt_tokens=10,
        completion_tokens=20,
        cost_pico=cost_pico,
        reserved_micro=WORST_MICRO,
        lease_id=lease_id,
        received_at=1_767_225_600,
        latency_ms=1,
    )


async def _until(check, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_two_replicas_share_little_credit_without_overdraft_and_the_last_cent_is_spent(
    running: Stack, database: Database
) -> None:
    account = f"acct_{uuid.uuid4().hex[:20]}"
    identity = Identity(account_id=account, key_id="key_replicas", plan="pro")
    await _grant(running, account, GRANTED_MICRO)
    router = await running.connect("router")
    js = router.jetstream()
    await ensure_usage_stream(js)
    replicas = [await Replica.start(running, "gateway-a"), await Replica.start(running, "gateway-b")]
    recalls: list[bytes] = []
    listener = await running.connect("gateway")

    async def heard(msg: nats.aio.msg.Msg) -> None:
        recalls.append(msg.data)

    await listener.subscribe(subjects.BILLING_LEASE_RECALLED, cb=heard)
    rng = random.Random(27)
    costs: dict[str, int] = {}  # request id -> exact cost, for every admitted request
    refused = 0
    lowest_available: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:  # the balance row, sampled all through the run
        while not done.is_set():
            row = await database.balance(account)
            lowest_available.append(min(row["balance_micro"] - row["held_micro"], row["balance_micro"]))
            await asyncio.sleep(0.02)

    async def request(n: int) -> None:
        nonlocal refused
        replica = replicas[n % 2]
        request_id = f"req-{n}"
        cost = rng.randint(0, WORST_MICRO * PICO_PER_MICRO)  # rarely whole micro-USD: the carry moves
        try:
            lease_id = await replica.credit.cover(identity, request_id, WORST_MICRO)
        except InsufficientCredits:
            refused += 1
            return
        costs[request_id] = cost
        await asyncio.sleep(rng.random() * 0.05)  # the job runs
        await publish_usage_event(js, _outcome(identity, request_id, lease_id, cost))
        replica.credit.finish(request_id, cost)  # the router's final chunk

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(request(n) for n in range(REQUESTS)))
    assert costs and refused, "some requests ran, and the little credit ran out for others"

    async def all_settled() -> bool:
        [row] = await database.rows(
            "SELECT COUNT(*) AS n FROM ledger_entries WHERE account_id = :a AND idempotency_key LIKE 'charge:%'",
            a=account,
        )
        return row["n"] == len(costs)

    await _until(all_settled)

    assert recalls, "a replica short of credit recalled the other's"

    # The last cent: a request whose worst case is exactly what is left, on the replica that holds
    # the least of it (what the other holds is recalled, its own lease replaced).
    row = await database.balance(account)
    remaining_pico = row["balance_micro"] * PICO_PER_MICRO - row["carry_pico"]
    last = -(-remaining_pico // PICO_PER_MICRO)
    assert last == row["balance_micro"] > 0
    held = await database.rows(
        "SELECT holder, SUM(held_micro) AS held FROM credit_leases WHERE account_id = :a GROUP BY holder", a=account
    )
    poorer = min(replicas, key=lambda r: sum(h["held"] for h in held if h["holder"] == r.credit.holder))
    richer = replicas[1] if poorer is replicas[0] else replicas[0]
    lease_id = await poorer.credit.cover(identity, "req-last", last)
    costs["req-last"] = remaining_pico
    await publish_usage_event(js, _outcome(identity, "req-last", lease_id, remaining_pico))
    poorer.credit.finish("req-last", remaining_pico)
    with pytest.raises(InsufficientCredits):
        await richer.credit.cover(identity, "req-broke", 1)

    for replica in replicas:
        await replica.stop()  # returns every lease

    async def closed() -> bool:
        open_leases = await database.rows(
            "SELECT id FROM credit_leases WHERE account_id = :a AND status <> 'closed'", a=account
        )
        return not open_leases and (await database.balance(account))["held_micro"] == 0

    await _until(closed)
    done.set()
    await watcher
    await router.drain()
    await listener.drain()

    assert min(lowest_available) >= 0, "never overdrawn, not even for a moment"
    row = await database.balance(account)
    [sums] = await database.rows(
        "SELECT COALESCE(-SUM(amount_micro) FILTER (WHERE kind = 'charge'), 0) AS charged, "
        "COALESCE(SUM(cost_pico), 0) AS cost, COALESCE(SUM(amount_micro), 0) AS balance, "
        "COALESCE(SUM(held_delta_micro), 0) AS held, COUNT(*) FILTER (WHERE kind = 'charge') AS charges "
        "FROM ledger_entries WHERE account_id = :a",
        a=account,
    )
    assert sums["cost"] == sum(costs.values()), "the sum of charges is the sum of the requests' costs"
    assert sums["charged"] * PICO_PER_MICRO + row["carry_pico"] == sum(costs.values())
    assert (row["balance_micro"], row["held_micro"]) == (GRANTED_MICRO - sums["charged"], 0)
    assert (sums["balance"], sums["held"]) == (row["balance_micro"], 0), "the balances row is what the ledger says"
    assert (row["balance_micro"], row["carry_pico"]) == (0, 0), "the last cent was spent, and nothing more"
    assert not running.violations()
