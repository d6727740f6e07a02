"""The fault suite's platform: real NATS, Postgres, Triton and the five services, all of its own
(a private Postgres cluster, a tritonserver serving SmolLM2 alone), so it may break any of them."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from faults.faults import FaultStack
from lexora_dev import stack
from lexora_dev.catalog import LOCAL_CHAT_MODEL, LOCAL_TRITON_MODEL, local_catalog
from lexora_dev.postgres import private_postgres
from support.stack import running_stack
from support.stripe_events import STRIPE_TEST_ENV
from support.triton_processes import supervised_triton

# Short enough that a hold whose request died (a gateway or router killed mid-job) is swept within
# a phase, and that a router killed mid-job costs its clients no more than this (the gateway waits
# for the deadline); long enough for the load's requests (6-10 tokens) on a quiet 2-core machine.
JOB_TIMEOUT_S = 20.0
RESERVATION_GRACE_S = 3.0
SWEEP_INTERVAL_S = 1.0
AUTH_CACHE_TTL_S = 30.0


@pytest.fixture(scope="package")
def fault_stack(request: pytest.FixtureRequest) -> Iterator[FaultStack]:
    root = Path(tempfile.mkdtemp(prefix="lexora-faults-"))
    repo = root / "models"
    repo.mkdir()
    (repo / LOCAL_TRITON_MODEL).symlink_to(stack.MODEL_REPO / LOCAL_TRITON_MODEL)
    env = {
        **STRIPE_TEST_ENV,
        "LEXORA_RESERVATION_GRACE_S": str(RESERVATION_GRACE_S),
        "LEXORA_SWEEP_INTERVAL_S": str(SWEEP_INTERVAL_S),
        "LEXORA_AUTH_CACHE_TTL_S": str(AUTH_CACHE_TTL_S),
    }
    try:
        with (
            # Production durability (fsync, synchronous commit): the tests' usual fsync=False also
            # turns synchronous commit off server-wide, and an immediate stop then loses commits
            # that were acknowledged (seen here: a usage record gone after a "Postgres restarted").
            private_postgres(root / "postgres", fsync=True, max_connections=200) as postgres,
            supervised_triton(root / "triton", repo) as triton,
        ):
            catalog = [r for r in local_catalog(triton.endpoint) if r.id == LOCAL_CHAT_MODEL]
            recovery = stack.start_model_recovery(root / "triton", triton.endpoint, catalog)
            try:
                with running_stack(
                    "faults", postgres.url, root / "stack", triton.endpoint, catalog, env, JOB_TIMEOUT_S
                ) as lexora:
                    yield FaultStack(
                        lexora=lexora,
                        triton=triton,
                        postgres=postgres,
                        pricing=catalog[0].pricing,
                        hold_ttl_s=JOB_TIMEOUT_S + RESERVATION_GRACE_S,
                        sweep_interval_s=SWEEP_INTERVAL_S,
                    )
            finally:
                recovery.stop()
    finally:
        if request.session.testsfailed:
            print(f"\nfault suite logs kept under {root}/stack/logs")
        else:
            shutil.rmtree(root, ignore_errors=True)
