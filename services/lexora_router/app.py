"""router service wiring: the generation subscription, cancellation, health."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from lexora_contracts import subjects
from lexora_contracts.messages import (
    CancelGeneration,
    CountTokensRequest,
    EmbeddingJob,
    GenerationRequest,
    HealthProbe,
    HealthReply,
    ImageJob,
    JobHeader,
)
from lexora_contracts.registry import EndpointHealth
from lexora_router.demand import DemandSchedule
from lexora_router.endpoint_health import HealthBook
from lexora_router.generation import Outcome, Router
from lexora_router.load_scraper import LoadScraper
from lexora_router.model_holds import ModelHolds
from lexora_router.prober import EndpointProber
from lexora_router.routing import make_policy
from lexora_router.settings import RouterSettings
from lexora_router.triton_engine import TritonEngine
from lexora_runtime import tracing
from lexora_runtime.bus import encode, ensure_usage_stream
from lexora_runtime.logs import request_id_var
from lexora_runtime.metrics import create_metrics, export_model_endpoints, export_pending_requests, serve_metrics
from lexora_runtime.model_registry import ModelRegistryView, publish_endpoint_health
from lexora_runtime.service import ServiceContext, run_until_stopped

log = logging.getLogger("lexora.router")
J = TypeVar("J", bound=JobHeader)
SERVER = tracing.SpanKind.SERVER


async def serve(settings: RouterSettings, ctx: ServiceContext) -> None:
    metrics = create_metrics("router")
    serve_metrics(metrics, settings.metrics_host, settings.metrics_port)
    await ensure_usage_stream(ctx.js)
    registry = ModelRegistryView()
    await registry.start(ctx.js)
    export_model_endpoints(metrics, registry.all)
    engine = TritonEngine()
    observer = f"router@{socket.gethostname()}:{os.getpid()}"
    health_book = HealthBook(observer=observer)
    scraper = LoadScraper(registry.all, settings.engine_load_interval_s)

    async def publish_health(health: EndpointHealth) -> None:
        """Every change a request or a probe saw (and an unhealthy state again, as it ages) goes
        through here: logged once, then published."""
        log.log(
            logging.INFO if health.healthy else logging.WARNING,
            "endpoint healthy" if health.healthy else "endpoint unhealthy",
            extra={"fields": {"model": health.model_id, "endpoint": health.endpoint, "reason": health.reason}},
        )
        try:
            await publish_endpoint_health(ctx.js, health)
        except Exception:  # the next change, or the periodic republish, tries again
            log.exception("could not publish endpoint health")

    router = Router(
        nc=ctx.nc,
        js=ctx.js,
        registry=registry,
        engine=engine,
        policy=make_policy(settings.policy),
        metrics=metrics,
        max_endpoint_attempts=settings.max_endpoint_attempts,
        max_job_s=settings.max_job_s,
        health=health_book,
        publish_health=publish_health,
        engine_load=scraper.loads,
        holds=ModelHolds(settings.hold_limit, settings.hold_retry_after_s),
    )
    log.info("routing", extra={"fields": {"policy": str(settings.policy), "hold_limit": settings.hold_limit}})
    export_pending_requests(metrics, registry.all, router.pending)
    prober = EndpointProber(
        registry,
        engine,
        health_book,
        publish_health,
        interval_s=settings.probe_interval_s,
        timeout_s=settings.probe_timeout_s,
    )

    def job_handler(
        model: type[J], work: Callable[[J, str, Outcome], Awaitable[None]] | None
    ) -> Callable[[Msg], Awaitable[None]]:
        """A subscription callback that runs each job as its own task, streaming to the reply inbox."""

        async def on_job(msg: Msg) -> None:
            if not msg.reply:
                return
            try:
                request = model.model_validate_json(msg.data)
            except ValueError:
                log.error("dropping malformed job", extra={"fields": {"subject": msg.subject}})
                return
            reply, headers = msg.reply, msg.headers

            async def job() -> None:
                request_id_var.set(request.request_id)
                try:
                    run = None if work is None else functools.partial(work, request, reply)
                    # The gateway's trace goes on in the job's span (GenAI attributes: Router.run).
                    with tracing.span(f"{tracing.operation_name(request)} {request.model}", SERVER, headers) as span:
                        if span.is_recording():
                            span.set_attributes(tracing.request_attributes(request))
                        await router.run(request, reply, run)
                finally:
                    router.jobs.pop(request.request_id, None)

            router.jobs[request.request_id] = asyncio.create_task(job())

        return on_job

    async def on_cancel(msg: Msg) -> None:
        router.cancel(CancelGeneration.model_validate_json(msg.data).request_id)

    async def health(_: HealthProbe) -> HealthReply:
        # What real requests and probes showed (Triton's readiness stays green when a stub dies).
        checks = health_book.snapshot()
        status = "ok" if all(v == "ok" for v in checks.values()) else "degraded"
        return HealthReply(service="router", status=status, checks=checks)

    queue = subjects.SERVICE_QUEUE["router"]
    await ctx.nc.subscribe(subjects.ROUTER_GENERATION_START, queue=queue, cb=job_handler(GenerationRequest, None))
    await ctx.nc.subscribe(subjects.ROUTER_EMBEDDING_CREATE, queue=queue, cb=job_handler(EmbeddingJob, router.embed))
    await ctx.nc.subscribe(subjects.ROUTER_IMAGE_CREATE, queue=queue, cb=job_handler(ImageJob, router.paint))
    await ctx.nc.subscribe(subjects.ROUTER_GENERATION_CANCEL, cb=on_cancel)
    await ctx.start_service(
        "router",
        {
            "count_tokens": (subjects.ROUTER_TOKENS_COUNT, CountTokensRequest, router.count_tokens),
            "health": (subjects.ROUTER_HEALTH, HealthProbe, health),
        },
    )
    background = [
        asyncio.create_task(prober.run()),
        asyncio.create_task(scraper.run()),
        asyncio.create_task(announce_demand(ctx.nc, router, DemandSchedule(observer))),
    ]
    try:
        await ctx.stopped()
    finally:
        for task in background:
            task.cancel()
        # Let running jobs finish (and record their outcome) before the process goes.
        if router.jobs:
            await asyncio.wait(list(router.jobs.values()), timeout=30)
        await registry.stop()
        await engine.close()


async def announce_demand(nc: NATS, router: Router, schedule: DemandSchedule) -> None:
    """Announce this router's demand per model (lexora_router.demand) on router.v1.model.demanded:
    looked at every half second, and at once when a model gets its first held request."""
    holds = router.holds
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(holds.woken.wait(), 0.5)
        holds.woken.clear()
        waiting = Counter(holds.waiting)
        counts = {m: (waiting[m], router.serving[m]) for m in {*waiting, *router.serving}}
        for demand in schedule.due(counts, time.time()):
            try:
                await nc.publish(subjects.ROUTER_MODEL_DEMANDED, encode(demand))
            except Exception:  # the next round announces it again
                log.exception("could not announce demand", extra={"fields": {"model": demand.model_id}})


def main() -> None:
    run_until_stopped("router", RouterSettings(), serve)
