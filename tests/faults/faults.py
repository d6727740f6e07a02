"""The faults, and one fault under load: start the load, break something, bring it back as a
Deployment (or the kubelet, or the database's operator) would, stop the load, read the books."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faults.books import Books, check_books
from faults.load import Load, LoadShape, Outcome
from lexora_contracts.registry import Pricing
from lexora_dev import stack
from lexora_dev.postgres import PostgresCluster, start_cluster, stop_cluster
from lexora_dev.processes import wait_until
from lexora_dev.stack import SupervisedTriton
from support.stack import Account, RunningStack

# make soak: every phase's load runs this many times longer, with twice the clients.
SOAK = os.environ.get("LEXORA_SOAK") == "1"
LOAD_BEFORE_S = 2.0 * (5 if SOAK else 1)
LOAD_AFTER_S = 4.0 * (10 if SOAK else 1)
# The load goes on past LOAD_AFTER_S until a request is served after the last failure, at most this.
RECOVERY_PATIENCE_S = 90.0
# One engine instance serves the load: more clients only queue behind each other.
CLIENTS = 4 if SOAK else 2
# Where a run's per-fault table goes (JSON), for docs/reliability.md (tests/faults/report.py).
RESULTS_ENV = "LEXORA_FAULT_RESULTS"


@dataclass
class FaultStack:
    """The platform on components of its own, so breaking them touches no other test."""

    lexora: RunningStack
    triton: SupervisedTriton
    postgres: PostgresCluster
    pricing: Pricing
    hold_ttl_s: float
    sweep_interval_s: float

    # ---- faults ------------------------------------------------------------------------------
    def kill_service(self, name: str) -> None:
        """kill -9, then started again (a Deployment's new pod), until it serves."""
        self.lexora.processes[name].kill()
        process = self.lexora.start(name)
        if name == "gateway":
            stack.wait_for_gateway(self.lexora.config.gateway_port, process)
        else:
            subject = {"auth": "auth", "billing": "billing", "usage": "usage", "router": "router"}[name]
            health = f"{subject}.v1.health.get"
            stack.wait_for_service(self.lexora.nats_url, health, process)  # as the tests' own NATS user

    def stop_nats(self) -> None:
        self.lexora.processes["nats"].kill()

    def start_nats(self) -> None:
        port = int(self.lexora.config.nats_url.rsplit(":", 1)[1])
        # Started again as it was: every service's user, and only those, with their permissions.
        self.lexora.processes["nats"] = stack.start_nats(
            self.lexora.config.state_dir, port, self.lexora.nats_monitor_port, users=self.lexora.nats_users
        )

    def restart_nats(self) -> None:
        self.stop_nats()
        self.start_nats()

    def stop_postgres(self) -> None:
        stop_cluster(self.postgres, "immediate")

    def start_postgres(self) -> None:
        start_cluster(self.postgres)

    def restart_postgres(self) -> None:
        self.stop_postgres()
        self.start_postgres()

    def kill_triton(self) -> None:
        """kill -9 of tritonserver and its Python stubs; the supervisor starts it again on its ports."""
        before = self.triton.restarts
        self.triton.process.kill()
        wait_until(lambda: self.triton.restarts > before and self.triton.process.alive, 300, "tritonserver")


@dataclass
class FaultResult:
    fault: str
    requests: int
    served: int
    failed: dict[str, int]
    lost_usage: int
    double_charges: int
    wrong_charges: int
    leaked_holds: int
    unbalanced_accounts: int
    overcharged_disconnects: int
    hangups: int
    recovered_after_s: float | None  # None: no request failed
    problems: dict[str, list[str]] = field(default_factory=dict)
    load_average: float = 0.0  # the machine's 1-minute load average as the phase ended (context)


def run_fault(
    faults: FaultStack,
    name: str,
    inject: Callable[[], None],
    accounts: list[Account],
    granted_micro: dict[str, int],
    shape: LoadShape | None = None,
    seed: int = 0,
) -> tuple[FaultResult, Books]:
    """Load from `accounts`; `inject` the fault after LOAD_BEFORE_S; keep the load on LOAD_AFTER_S
    after the fault was repaired (inject returns once it is), then the books."""
    shape = shape or LoadShape(clients=CLIENTS)
    load = Load(faults.lexora.base_url, accounts, shape, seed=seed).start()
    time.sleep(LOAD_BEFORE_S)
    fault_at = time.time()
    inject()
    repaired_at = time.time()
    time.sleep(LOAD_AFTER_S)
    patience = time.monotonic() + RECOVERY_PATIENCE_S
    while not recovered(load, fault_at, repaired_at) and time.monotonic() < patience:
        time.sleep(0.5)
    outcomes = load.stop()
    books = check_books(
        faults.lexora, accounts, granted_micro, outcomes, faults.pricing, faults.hold_ttl_s, faults.sweep_interval_s
    )
    result = FaultResult(
        fault=name,
        requests=len(outcomes),
        served=books.served,
        failed=dict(books.failed),
        lost_usage=len(books.lost_usage),
        double_charges=len(books.double_charges) + len(books.double_records),
        wrong_charges=len(books.wrong_charges) + len(books.client_mismatch),
        leaked_holds=len(books.leaked_holds),
        unbalanced_accounts=len(books.unbalanced_accounts),
        overcharged_disconnects=len(books.overcharged_disconnects),
        hangups=books.hangups,
        recovered_after_s=recovery_time(outcomes, fault_at),
        problems=books.problems(),
        load_average=round(os.getloadavg()[0], 1),
    )
    record_result(result)
    return result, books


def recovered(load: Load, fault_at: float, repaired_at: float) -> bool:
    """A request was served after the last failure, or none failed and no request begun before
    the repair is still unanswered (one that was in flight through the fault may yet fail, at its
    deadline: a NATS restart loses the replies of the jobs running through it)."""
    recovery = recovery_time(load.snapshot(), fault_at)
    if recovery is None:
        oldest = load.oldest_in_flight()
        return oldest is None or oldest >= repaired_at
    return recovery != float("inf")


def recovery_time(outcomes: list[Outcome], fault_at: float) -> float | None:
    """Seconds from the fault until the end of the first request served after the last failed one
    began; None when no request failed (the fault went unnoticed by clients)."""
    failed = [o for o in outcomes if o.failed and o.ended >= fault_at]
    if not failed:
        return None
    last_failure = max(o.started for o in failed)
    after = [o.ended for o in outcomes if o.served and o.started >= last_failure]
    return round(min(after) - fault_at, 1) if after else float("inf")


def record_result(result: FaultResult) -> None:
    """Append the result to the JSON file LEXORA_FAULT_RESULTS names (when set)."""
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    target = Path(path)
    found: list[dict[str, Any]] = json.loads(target.read_text()) if target.exists() else []
    found = [r for r in found if r["fault"] != result.fault] + [result.__dict__]
    target.write_text(json.dumps(found, indent=2))
