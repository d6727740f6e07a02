"""Fixtures for the operator: a real nats-server, the kmock API emulator, and the running operator.

The emulator and the Cluster client the tests drive it with live in operator_support.py, which
test modules import from. Only light fixtures here: nothing from tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kmock
import kopf
import nats
import pytest
import pytest_asyncio
from nats.js.errors import NotFoundError
from operator_support import RESOURCES, RESYNC_SECONDS, VERBS, Cluster, ClusterEmulator

from lexora_contracts import subjects
from lexora_dev.processes import free_port
from lexora_dev.stack import start_nats
from lexora_operator.app import run_operator
from lexora_operator.settings import OperatorSettings
from lexora_runtime.model_registry import ModelRegistryView


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    state = Path(tempfile.mkdtemp(prefix="lexora-operator-tests-"))
    port = free_port()
    process = start_nats(state, port)
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def operator_overrides() -> dict[str, Any]:
    """OperatorSettings beyond the defaults; a test module overrides this fixture to change them."""
    return {}


@pytest_asyncio.fixture
async def cluster(nats_url: str, operator_overrides: dict[str, Any]) -> AsyncIterator[Cluster]:
    """A fresh API emulator, an empty model registry, and the operator running against both."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_key_value(subjects.MODEL_REGISTRY_BUCKET)
    view = ModelRegistryView()
    await view.start(js)

    emulator = ClusterEmulator()
    for key, (kind, namespaced, subresources) in RESOURCES.items():
        emulator.resources[key] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, subresources=subresources, verbs=VERBS
        )
    async with emulator, kmock.Server(emulator):
        settings = OperatorSettings(
            nats_url=nats_url, resync_seconds=RESYNC_SECONDS, health_port=0, **operator_overrides
        )
        connection = kopf.ConnectionInfo(server=str(emulator.url).rstrip("/"), insecure=True)
        # The operator gets its own thread and loop, as in production: kopf cancels every task it
        # did not start when it stops, which would include pytest-asyncio's own.
        stop, ready = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=lambda: asyncio.run(run_operator(settings, connection, stop_flag=stop, ready_flag=ready)),
            name="lexora-operator",
            daemon=True,
        )
        thread.start()
        assert await asyncio.to_thread(ready.wait, 20), "the operator did not start"
        try:
            yield Cluster(emulator, view)
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, 20)
            await view.stop()
            await nc.close()
