"""Fixtures that start the real components: nats-server, Postgres, tritonserver, the services."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lexora_contracts.registry import Endpoint
from lexora_dev import stack
from lexora_dev.catalog import local_catalog
from lexora_dev.processes import free_port
from support.postgres import private_postgres
from support.stack import RunningStack
from support.stripe_events import STRIPE_TEST_ENV


@pytest.fixture(scope="session")
def state_root(request: pytest.FixtureRequest) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="lexora-tests-"))
    yield root
    if request.session.testsfailed:
        print(f"\nservice logs kept for inspection under {root}/*/logs")
    else:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def triton_endpoint(state_root: Path) -> Iterator[Endpoint]:
    """One real tritonserver serving model-repo/ for the whole session (models are stateless)."""
    process, endpoint = stack.start_triton(state_root / "triton")
    yield endpoint
    process.stop()


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A nats-server with JetStream of the test's own, for tests of one component against it."""
    port = free_port()
    server = stack.start_nats(tmp_path, port)
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with private_postgres() as url:
        yield url


def _start_stack(name: str, database_url: str, state_dir: Path, triton_endpoint: Endpoint) -> Iterator[RunningStack]:
    nats_port, monitor_port = free_port(), free_port()
    nats_process = stack.start_nats(state_dir, nats_port, monitor_port)
    config = stack.ServiceConfig(
        nats_url=f"nats://127.0.0.1:{nats_port}",
        database_url=database_url,
        state_dir=state_dir,
        gateway_port=free_port(),
        log_level="INFO",
        extra_env=STRIPE_TEST_ENV,
    )
    running = RunningStack(name, config, {"nats": nats_process}, nats_monitor_port=monitor_port)
    try:
        stack.prepare_database(database_url)
        stack.publish_catalog(config.nats_url, local_catalog(triton_endpoint))
        for service in stack.SERVICES:
            running.start(service)
        stack.wait_for_gateway(config.gateway_port, running.processes["gateway"])
        yield running
    finally:
        for process in reversed(list(running.processes.values())):
            process.stop()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def lexora(request: pytest.FixtureRequest, state_root: Path, triton_endpoint: Endpoint) -> Iterator[RunningStack]:
    """The whole platform on real components, once on SQLite and once on Postgres."""
    state_dir = state_root / request.param
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{state_dir / 'lexora.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    yield from _start_stack(request.param, url, state_dir, triton_endpoint)
