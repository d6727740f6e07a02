"""Process lifecycle shared by the NATS services: connect, register endpoints, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
from nats import micro
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from lexora_contracts.messages import HealthReply
from lexora_runtime import bus
from lexora_runtime.logs import configure_logging
from lexora_runtime.loop import fast_runner, freeze_startup_heap
from lexora_runtime.settings import ServiceSettings
from lexora_runtime.tracing import set_tracer_provider_from_env

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)
CONNECT_PATIENCE_S = 60


class ServiceContext:
    """What a service's serve() gets: the bus, and a way to wait for shutdown."""

    def __init__(self, nc: NATS, stop: asyncio.Event):
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.runner = bus.EndpointRunner()
        self._stop = stop
        self._services: list[micro.Service] = []

    async def start_service(
        self, name: str, endpoints: dict[str, Any], unreachable: bus.Unreachable | None = None
    ) -> micro.Service:
        """`unreachable`: whether a handler's exception means its database cannot be reached (then
        answered 503 ServiceUnavailable; lexora_db.engine.database_unreachable)."""
        service = await bus.start_service(self.nc, name, endpoints, self.runner, unreachable)
        self._services.append(service)
        return service

    async def stopped(self) -> None:
        await self._stop.wait()

    async def stopped_or_failed(self, *workers: asyncio.Task[None]) -> None:
        """Wait for shutdown; if a background worker dies first, raise its error so the process
        exits and its supervisor restarts it, instead of running on half alive."""
        stop = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait([stop, *workers], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        for worker in workers:
            if worker in done and not self._stop.is_set():
                log.error("background worker stopped; exiting")
                worker.result()
                raise RuntimeError("background worker stopped")

    async def close(self) -> None:
        for service in self._services:
            await service.stop()
        await self.runner.drain()


async def connect_with_patience(url: str, name: str, access: bus.NatsAccess | None = None) -> NATS:
    """Services may start before NATS is up (pods start in any order): keep trying for a while."""
    deadline = asyncio.get_running_loop().time() + CONNECT_PATIENCE_S
    while True:
        try:
            return await bus.connect(url, name, access)
        except (TimeoutError, OSError, nats.errors.NoServersError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _run(name: str, settings: S, serve: Callable[[S, ServiceContext], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    nc = await connect_with_patience(settings.nats_url, f"lexora-{name}", settings.nats_access)
    ctx = ServiceContext(nc, stop)
    log.info("service starting")
    freeze_startup_heap()
    try:
        await serve(settings, ctx)
    finally:
        await ctx.close()
        await nc.drain()
        log.info("service stopped")


def run_until_stopped(name: str, settings: S, serve: Callable[[S, ServiceContext], Awaitable[None]]) -> None:
    configure_logging(name, settings.log_level)
    tracer_provider = set_tracer_provider_from_env(name)  # None: tracing off (no OTLP endpoint named)
    try:
        with fast_runner() as runner:
            runner.run(_run(name, settings, serve))
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()  # sends the spans still queued


async def health_of(service: str, **checks: Callable[[], Awaitable[object]]) -> HealthReply:
    results: dict[str, str] = {}
    for check_name, check in checks.items():
        try:
            await asyncio.wait_for(check(), 2.0)
            results[check_name] = "ok"
        except Exception as exc:  # a health probe reports, it never raises
            results[check_name] = f"error: {type(exc).__name__}"
    status = "ok" if all(v == "ok" for v in results.values()) else "degraded"
    return HealthReply(service=service, status=status, checks=results)
