"""billing service wiring: reserve/grant/balance and top-up endpoints, the settle consumer and the sweeper."""

from __future__ import annotations

import asyncio
import logging

from lexora_billing.ledger import Ledger, utcnow
from lexora_billing.settings import BillingSettings
from lexora_billing.topup_endpoints import TopUpEndpoints, stripe_from
from lexora_contracts import subjects
from lexora_contracts.messages import (
    Balance,
    BalanceRequest,
    GrantRequest,
    HealthProbe,
    HealthReply,
    ReserveReply,
    ReserveRequest,
    UsageEvent,
)
from lexora_contracts.usage_api import (
    BILLING_CREDITS_SUMMARY,
    BILLING_KEY_SPEND_GET,
    CreditsSummary,
    CreditsSummaryRequest,
    KeySpend,
    KeySpendRequest,
)
from lexora_runtime.bus import consume_usage_events
from lexora_runtime.db import create_engine
from lexora_runtime.metrics import create_metrics, serve_metrics
from lexora_runtime.service import ServiceContext, health_of, run_until_stopped

log = logging.getLogger("lexora.billing")


async def serve(settings: BillingSettings, ctx: ServiceContext) -> None:
    engine = create_engine(settings.database_url)
    ledger = Ledger(engine, settings.database_url)
    metrics = create_metrics("billing")
    serve_metrics(metrics, settings.metrics_host, settings.metrics_port)
    stripe = stripe_from(settings)
    topups = TopUpEndpoints(ledger, stripe, metrics)

    async def reserve(request: ReserveRequest) -> ReserveReply:
        with metrics.latency.labels("billing", "reserve").time():
            try:
                available = await ledger.reserve(
                    request.request_id,
                    request.account_id,
                    request.amount_micro,
                    request.ttl_s,
                    utcnow(),
                    key_id=request.key_id,
                    key_limit_micro=request.key_spend_limit_micro,
                )
            except Exception:
                metrics.requests.labels("billing", "reserve", "refused").inc()
                raise
        metrics.requests.labels("billing", "reserve", "ok").inc()
        return ReserveReply(reserved_micro=request.amount_micro, available_micro=available)

    async def grant(request: GrantRequest) -> Balance:
        applied = await ledger.grant(
            request.account_id,
            request.amount_micro,
            request.idempotency_key,
            request.actor,
            request.reason,
            utcnow(),
            kind=request.kind,
        )
        log.info(
            "credit granted" if applied else "grant already applied",
            extra={"fields": {"account_id": request.account_id, "amount_micro": request.amount_micro}},
        )
        return await ledger.balance(request.account_id)

    async def balance(request: BalanceRequest) -> Balance:
        return await ledger.balance(request.account_id)

    async def credits_summary(request: CreditsSummaryRequest) -> CreditsSummary:
        credited, charged = await ledger.credits_summary(request.account_id)
        balance = await ledger.balance(request.account_id)
        return CreditsSummary(credited_micro=credited, charged_micro=charged, balance_micro=balance.balance_micro)

    async def key_spend(request: KeySpendRequest) -> KeySpend:
        spent, held = await ledger.key_spend(request.key_id)
        return KeySpend(key_id=request.key_id, spent_micro=spent, held_micro=held)

    async def health(_: HealthProbe) -> HealthReply:
        return await health_of("billing", database=ledger.ping)

    async def settle(data: bytes) -> None:
        event = UsageEvent.model_validate_json(data)
        applied = await ledger.settle(event, utcnow())
        metrics.requests.labels("billing", "settle", "applied" if applied else "duplicate").inc()

    async def sweep() -> None:
        while True:
            await asyncio.sleep(settings.sweep_interval_s)
            try:
                released = await ledger.release_expired(utcnow())
                if released:
                    log.warning("released expired reservations", extra={"fields": {"count": released}})
            except Exception:
                log.exception("reservation sweep failed")

    await ctx.start_service(
        "billing",
        {
            "reserve": (subjects.BILLING_CREDITS_RESERVE, ReserveRequest, reserve),
            "grant": (subjects.BILLING_CREDITS_GRANT, GrantRequest, grant),
            "balance": (subjects.BILLING_BALANCE_GET, BalanceRequest, balance),
            "credits_summary": (BILLING_CREDITS_SUMMARY, CreditsSummaryRequest, credits_summary),
            "key_spend": (BILLING_KEY_SPEND_GET, KeySpendRequest, key_spend),
            "health": (subjects.BILLING_HEALTH, HealthProbe, health),
            **topups.endpoints(),
        },
    )
    stop = asyncio.Event()
    consumer = asyncio.create_task(consume_usage_events(ctx.js, subjects.BILLING_SETTLE_CONSUMER, settle, stop))
    sweeper = asyncio.create_task(sweep())
    try:
        await ctx.stopped_or_failed(consumer, sweeper)
    finally:
        stop.set()
        sweeper.cancel()
        await asyncio.wait([consumer], timeout=5)
        await stripe.close()
        await engine.dispose()


def main() -> None:
    run_until_stopped("billing", BillingSettings(), serve)
