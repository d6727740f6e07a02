"""The API emulator of the cluster in a box: kmock in a thread of its own, admitting ModelDeployments
with the CRD's rules as kube-apiserver does. The emulator and its admission live with the operator's
tests (tests/operator); this folder shares them."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock

sys.path.append(str(Path(__file__).resolve().parents[1] / "operator"))
operator_support: Any = importlib.import_module("operator_support")
crd_admission: Any = importlib.import_module("crd_admission")


@contextlib.contextmanager
def api_emulator() -> Iterator[tuple[str, Any]]:
    """kmock in a thread of its own, with the CRD's admission; yields its URL and the emulator."""
    emulator = operator_support.ClusterEmulator()
    emulator.crds = {
        ("serving.lexora.network", "modeldeployments"): crd_admission.CrdSchema.from_file(operator_support.CRD_PATH)
    }
    for key, (kind, namespaced, subresources) in operator_support.RESOURCES.items():
        emulator.resources[key] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, subresources=subresources, verbs=operator_support.VERBS
        )
    started, url = threading.Event(), {}
    stop: asyncio.Event | None = None
    loop = asyncio.new_event_loop()

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with emulator, kmock.Server(emulator):
            url["url"] = str(emulator.url).rstrip("/")
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), name="kube-api", daemon=True)
    thread.start()
    assert started.wait(20), "the API emulator did not start"
    try:
        yield url["url"], emulator
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)
