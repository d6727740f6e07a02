"""usage service wiring: the JetStream consumer that records every request outcome."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from lexora_contracts import subjects
from lexora_contracts.messages import HealthProbe, HealthReply, UsageEvent
from lexora_contracts.usage_api import (
    USAGE_KEY_SPEND_LIST,
    USAGE_REPORT_GET,
    KeySpendList,
    KeySpendListRequest,
    UsageReport,
    UsageReportRequest,
)
from lexora_db.engine import create_engine, database_unreachable
from lexora_runtime.bus import consume_usage_event_batches, parse_usage_events
from lexora_runtime.metrics import create_metrics, serve_metrics
from lexora_runtime.service import ServiceContext, health_of, run_until_stopped
from lexora_usage.recorder import UsageRecorder
from lexora_usage.report import key_costs, usage_report
from lexora_usage.settings import UsageSettings

log = logging.getLogger("lexora.usage")


async def serve(settings: UsageSettings, ctx: ServiceContext) -> None:
    engine = create_engine(settings.database_url)
    recorder = UsageRecorder(engine)
    metrics = create_metrics("usage")
    serve_metrics(metrics, settings.metrics_host, settings.metrics_port)

    async def record(events: list[bytes]) -> list[BaseException | None]:
        """Record a fetched batch in one transaction. An event that is not a usage event is
        terminated; if the transaction fails, each event is tried alone and only those that fail
        again are redelivered."""
        outcomes, parsed = parse_usage_events(events)
        if not parsed:
            return outcomes
        try:
            with metrics.latency.labels("usage", "record_batch").time():
                written = await recorder.record_batch([event for _, event in parsed], datetime.now(UTC))
        except Exception:
            # One event the database refuses must not hold back the others: each on its own, and
            # only those that fail again are redelivered (after a delay growing with attempts).
            log.warning("recording a batch of usage events failed; recording them one by one", exc_info=True)
            for i, event in parsed:
                outcomes[i] = await record_one(event)
            return outcomes
        count_recorded(len(parsed), written)
        return outcomes

    async def record_one(event: UsageEvent) -> BaseException | None:
        try:
            count_recorded(1, await recorder.record_batch([event], datetime.now(UTC)))
        except Exception as exc:
            log.exception("recording a usage event failed; it will be redelivered")
            metrics.requests.labels("usage", "record", "failed").inc()
            return exc
        return None

    def count_recorded(received: int, written: list[UsageEvent]) -> None:
        metrics.requests.labels("usage", "record", "written").inc(len(written))
        metrics.requests.labels("usage", "record", "duplicate").inc(received - len(written))
        for event in written:
            metrics.tokens.labels("usage", event.model, "input").inc(event.prompt_tokens)
            metrics.tokens.labels("usage", event.model, "output").inc(event.completion_tokens)

    async def health(_: HealthProbe) -> HealthReply:
        return await health_of("usage", database=recorder.ping)

    async def report(request: UsageReportRequest) -> UsageReport:
        return await usage_report(engine, request)

    async def key_spend(request: KeySpendListRequest) -> KeySpendList:
        return await key_costs(engine, request.account_id)

    await ctx.start_service(
        "usage",
        {
            "report": (USAGE_REPORT_GET, UsageReportRequest, report),
            "key_spend": (USAGE_KEY_SPEND_LIST, KeySpendListRequest, key_spend),
            "health": (subjects.USAGE_HEALTH, HealthProbe, health),
        },
        unreachable=database_unreachable,
    )
    stop = asyncio.Event()
    consumer = asyncio.create_task(
        consume_usage_event_batches(
            ctx.js,
            subjects.USAGE_RECORD_CONSUMER,
            record,
            stop,
            batch=settings.record_batch_size,
            gather_s=settings.record_gather_s,
            pending=metrics.consumer_pending.labels(subjects.USAGE_RECORD_CONSUMER).set,
        )
    )
    try:
        await ctx.stopped_or_failed(consumer)
    finally:
        stop.set()
        await asyncio.wait([consumer], timeout=5)
        await engine.dispose()


def main() -> None:
    run_until_stopped("usage", UsageSettings(), serve)
