"""usage service wiring: the JetStream consumer that records every request outcome."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from lexora_contracts import subjects
from lexora_contracts.messages import HealthProbe, HealthReply, UsageEvent
from lexora_contracts.usage_api import USAGE_REPORT_GET, UsageReport, UsageReportRequest
from lexora_runtime.bus import consume_usage_events
from lexora_runtime.db import create_engine, is_sqlite
from lexora_runtime.metrics import create_metrics, serve_metrics
from lexora_runtime.service import ServiceContext, health_of, run_until_stopped
from lexora_usage.recorder import UsageRecorder
from lexora_usage.report import usage_report
from lexora_usage.settings import UsageSettings


async def serve(settings: UsageSettings, ctx: ServiceContext) -> None:
    engine = create_engine(settings.database_url)
    recorder = UsageRecorder(engine, settings.database_url)
    metrics = create_metrics("usage")
    serve_metrics(metrics, settings.metrics_host, settings.metrics_port)

    async def record(data: bytes) -> None:
        event = UsageEvent.model_validate_json(data)
        written = await recorder.record(event, datetime.now(UTC))
        metrics.requests.labels("usage", "record", "written" if written else "duplicate").inc()
        if written:
            metrics.tokens.labels("usage", event.model, "input").inc(event.prompt_tokens)
            metrics.tokens.labels("usage", event.model, "output").inc(event.completion_tokens)

    async def health(_: HealthProbe) -> HealthReply:
        return await health_of("usage", database=recorder.ping)

    async def report(request: UsageReportRequest) -> UsageReport:
        return await usage_report(engine, request, is_sqlite(settings.database_url))

    await ctx.start_service(
        "usage",
        {
            "report": (USAGE_REPORT_GET, UsageReportRequest, report),
            "health": (subjects.USAGE_HEALTH, HealthProbe, health),
        },
    )
    stop = asyncio.Event()
    consumer = asyncio.create_task(consume_usage_events(ctx.js, subjects.USAGE_RECORD_CONSUMER, record, stop))
    try:
        await ctx.stopped_or_failed(consumer)
    finally:
        stop.set()
        await asyncio.wait([consumer], timeout=5)
        await engine.dispose()


def main() -> None:
    run_until_stopped("usage", UsageSettings(), serve)
