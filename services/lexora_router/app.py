"""router service wiring: the generation subscription, cancellation, health."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.msg import Msg

from lexora_contracts import subjects
from lexora_contracts.messages import (
    CancelGeneration,
    CountTokensRequest,
    GenerationRequest,
    HealthProbe,
    HealthReply,
)
from lexora_router.generation import Router
from lexora_router.routing import PolicyName, make_policy
from lexora_router.settings import RouterSettings
from lexora_router.triton_engine import TritonEngine
from lexora_runtime.bus import ensure_usage_stream
from lexora_runtime.logs import request_id_var
from lexora_runtime.metrics import create_metrics, serve_metrics
from lexora_runtime.model_registry import ModelRegistryView
from lexora_runtime.service import ServiceContext, run_until_stopped

log = logging.getLogger("lexora.router")


async def serve(settings: RouterSettings, ctx: ServiceContext) -> None:
    metrics = create_metrics("router")
    serve_metrics(metrics, settings.metrics_host, settings.metrics_port)
    await ensure_usage_stream(ctx.js)
    registry = ModelRegistryView()
    await registry.start(ctx.js)
    engine = TritonEngine()
    router = Router(
        nc=ctx.nc,
        js=ctx.js,
        registry=registry,
        engine=engine,
        policy=make_policy(PolicyName.LEAST_IN_FLIGHT),
        metrics=metrics,
        max_endpoint_attempts=settings.max_endpoint_attempts,
        max_job_s=settings.max_job_s,
    )

    async def on_generate(msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            request = GenerationRequest.model_validate_json(msg.data)
        except ValueError:
            log.error("dropping malformed generation request")
            return

        async def job() -> None:
            request_id_var.set(request.request_id)
            try:
                await router.run(request, msg.reply)
            finally:
                router.jobs.pop(request.request_id, None)

        router.jobs[request.request_id] = asyncio.create_task(job())

    async def on_cancel(msg: Msg) -> None:
        router.cancel(CancelGeneration.model_validate_json(msg.data).request_id)

    async def health(_: HealthProbe) -> HealthReply:
        checks: dict[str, str] = {}
        for record in registry.all():
            for endpoint in record.ready_endpoints:
                ready = await engine.ready(endpoint.grpc_address, record.triton_model)
                checks[f"{record.id}@{endpoint.name}"] = "ok" if ready else "unready"
        status = "ok" if all(v == "ok" for v in checks.values()) else "degraded"
        return HealthReply(service="router", status=status, checks=checks)

    await ctx.nc.subscribe(subjects.ROUTER_GENERATION_START, queue=subjects.SERVICE_QUEUE["router"], cb=on_generate)
    await ctx.nc.subscribe(subjects.ROUTER_GENERATION_CANCEL, cb=on_cancel)
    await ctx.start_service(
        "router",
        {
            "count_tokens": (subjects.ROUTER_TOKENS_COUNT, CountTokensRequest, router.count_tokens),
            "health": (subjects.ROUTER_HEALTH, HealthProbe, health),
        },
    )
    try:
        await ctx.stopped()
    finally:
        # Let running jobs finish (and record their outcome) before the process goes.
        if router.jobs:
            await asyncio.wait(list(router.jobs.values()), timeout=30)
        await registry.stop()
        await engine.close()


def main() -> None:
    run_until_stopped("router", RouterSettings(), serve)
