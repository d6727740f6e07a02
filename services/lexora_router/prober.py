"""Probes each model's engine on each endpoint with a real, minimal request, and publishes what it
finds to the endpoint-health bucket (docs/architecture.md, "Engine health").

A chat model is asked for one token, an embedding model for one short input, an image model for
the smallest picture (256x256, one step). Endpoints that served a request of this router within
the last interval are not probed: the request was the probe. A probe that fails (the engine's
error, an unreachable endpoint) marks the endpoint unhealthy at once. One that gets no answer in
time does only if Triton's statistics show no inference completed lately, by anyone: an engine
busy with other routers' work queues the probe behind it, and being slow is not being broken.
Each endpoint's probe runs on its own, so a slow one never delays the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from lexora_contracts.registry import Endpoint, EndpointHealth, ModelRecord
from lexora_router import triton_media
from lexora_router.endpoint_health import HealthBook
from lexora_router.triton_engine import TritonEngine
from lexora_runtime.model_registry import ModelRegistryView

log = logging.getLogger("lexora.router")

# An engine that completed an inference this recently is busy, not stuck (the job deadline).
STALL_S = 120.0
# The smallest picture the contract allows, in one step.
PROBE_IMAGE = triton_media.image_tensors("a dot", width=256, height=256, steps=1, guidance_scale=0.0)


async def probe_engine(engine: TritonEngine, record: ModelRecord, endpoint: Endpoint) -> None:
    """One minimal real request to `record`'s model on `endpoint`; raises when it cannot serve."""
    address = endpoint.grpc_address
    if record.kind == "chat":
        await engine.probe_generation(address, record.triton_model)
    elif record.kind == "embedding":
        await triton_media.embed(engine, address, record.triton_model, ["ping"])
    else:
        await engine.infer(address, record.triton_model, PROBE_IMAGE, triton_media.IMAGE_OUTPUTS)


class EndpointProber:
    def __init__(
        self,
        registry: ModelRegistryView,
        engine: TritonEngine,
        book: HealthBook,
        publish: Callable[[EndpointHealth], Awaitable[None]],
        interval_s: float,
        timeout_s: float,
    ):
        self._registry = registry
        self._engine = engine
        self._book = book
        self._publish = publish
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._probing: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.probe_round()
                except Exception:
                    log.exception("probe round failed")
                await asyncio.sleep(self._interval_s)
        finally:
            for task in self._probing.values():
                task.cancel()

    async def probe_round(self) -> None:
        """Start a probe of every endpoint that needs one and has none running."""
        now = time.time()
        records = self._registry.all()
        targets = {(r.id, e.name): (r, e) for r in records for e in r.deployed_endpoints}
        self._book.forget_all_but(set(targets))
        for key, (record, endpoint) in targets.items():
            if key in self._probing or not self._book.needs_probe(record.id, endpoint.name, now, self._interval_s):
                continue
            task = asyncio.create_task(self._probe(record, endpoint))
            self._probing[key] = task
            task.add_done_callback(lambda _, key=key: self._probing.pop(key, None))
        for health in self._book.due_again(time.time()):
            await self._publish(health)

    async def _probe(self, record: ModelRecord, endpoint: Endpoint) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await probe_engine(self._engine, record, endpoint)
        except TimeoutError:
            age = await self._engine.last_inference_age(endpoint.grpc_address, record.triton_model)
            if age is not None and age <= STALL_S:
                return  # queued behind real work: inconclusive
            done = "never completed an inference" if age is None else f"completed none for {age:.0f} s"
            reason = f"no answer to a probe within {self._timeout_s:g} s, and the model {done}"
            change = self._book.failed(record.id, endpoint.name, reason, time.time())
        except Exception as exc:  # the engine's error, an unreachable endpoint: it cannot serve
            change = self._book.failed(record.id, endpoint.name, f"{type(exc).__name__}: {exc}", time.time())
        else:
            change = self._book.served(record.id, endpoint.name, time.time())
            if change is None and not endpoint.healthy:  # another router's word: it serves again
                change = self._book.current(record.id, endpoint.name, time.time())
        if change is not None:
            await self._publish(change)
