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
from support import secret_scan
from support.postgres import private_postgres
from support.stack import MODEL_ALIASES_TEST_ENV, RunningStack, running_stack
from support.stripe_events import STRIPE_TEST_ENV
from support.triton_processes import supervised_triton


@pytest.fixture(scope="session")
def state_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="lexora-tests-"))
    yield root
    # Every log line the session produced, before the logs go: no key, pepper, password or Stripe secret.
    found = secret_scan.leaks([root, tmp_path_factory.getbasetemp()])
    assert not found, "secrets in the logs:\n" + "\n".join(found[:20])
    if request.session.testsfailed:
        print(f"\nservice logs kept for inspection under {root}/*/logs")
    else:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def triton_endpoint(state_root: Path) -> Iterator[Endpoint]:
    """One real tritonserver serving model-repo/ for the whole session (models are stateless), with
    the model recovery `lexora dev` runs beside it."""
    with supervised_triton(state_root / "triton") as triton:
        recovery = stack.start_model_recovery(state_root / "triton", triton.endpoint, local_catalog(triton.endpoint))
        yield triton.endpoint
        recovery.stop()


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
    """A database of the session's own: on the server DATABASE_URL names, else on a private
    embedded Postgres cluster."""
    with private_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def lexora(state_root: Path, triton_endpoint: Endpoint, postgres_url: str) -> Iterator[RunningStack]:
    """The whole platform on real components."""
    state_dir = state_root / "lexora"
    env = {**STRIPE_TEST_ENV, **MODEL_ALIASES_TEST_ENV}
    with running_stack("lexora", postgres_url, state_dir, triton_endpoint, extra_env=env) as running:
        yield running
