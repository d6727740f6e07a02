"""billing service wiring: reserve/grant/balance and top-up endpoints, the settle consumer and the sweeper."""

from __future__ import annotations

import asyncio
import logging

from lexora_auth.client import AuthClient
from lexora_billing.history import transactions
from lexora_billing.leases import LeasePolicy
from lexora_billing.ledger import Ledger, utcnow
from lexora_billing.settings import BillingSettings
from lexora_billing.topup_endpoints import TopUpEndpoints, stripe_from
from lexora_contracts import subjects
from lexora_contracts.errors import Forbidden, InsufficientCredits, Unauthorized
from lexora_contracts.messages import (
    AdminGrantRequest,
    Balance,
    BalanceRequest,
    GrantRequest,
    HealthProbe,
    HealthReply,
    LeaseAcquireRequest,
    LeaseGrant,
    LeaseRecall,
    LeaseReturnReply,
    LeaseReturnRequest,
    ReserveReply,
    ReserveRequest,
    UsageEvent,
)
from lexora_contracts.usage_api import (
    BILLING_CREDITS_SUMMARY,
    BILLING_KEY_SPEND_GET,
    BILLING_TRANSACTIONS_LIST,
    CreditsSummary,
    CreditsSummaryRequest,
    KeySpend,
    KeySpendRequest,
    TransactionList,
    TransactionsRequest,
)
from lexora_db.engine import create_engine, database_unreachable
from lexora_runtime.bus import consume_usage_event_batches, parse_usage_events
from lexora_runtime.metrics import create_metrics, serve_metrics
from lexora_runtime.service import ServiceContext, health_of, run_until_stopped

log = logging.getLogger("lexora.billing")


async def serve(settings: BillingSettings, ctx: ServiceContext) -> None:
    engine = create_engine(settings.database_url)
    ledger = Ledger(engine)
    await ledger.open(pool_size=settings.database_pool_size)
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

    policy = LeasePolicy(settings.lease_cap_micro, settings.lease_spend_multiple, settings.lease_need_multiple)

    async def acquire_lease(request: LeaseAcquireRequest) -> LeaseGrant:
        with metrics.latency.labels("billing", "lease_acquire").time():
            try:
                amount = await ledger.acquire_lease(request, utcnow(), policy)
            except InsufficientCredits:
                amount = await recalled_and_retried(request)
                if amount is None:
                    metrics.requests.labels("billing", "lease_acquire", "refused").inc()
                    raise
        metrics.requests.labels("billing", "lease_acquire", "ok").inc()
        return LeaseGrant(lease_id=request.lease_id, amount_micro=amount)

    async def recalled_and_retried(request: LeaseAcquireRequest) -> int | None:
        """Refused while other replicas' leases hold credit on the account: ask them to return
        their free parts, and try again as those returns land (None: still refused)."""
        if not await ledger.other_lease_holders(request.account_id, request.holder):
            return None
        recall = LeaseRecall(account_id=request.account_id, key_id=request.key_id, holder=request.holder)
        await ctx.nc.publish(subjects.BILLING_LEASE_RECALLED, recall.model_dump_json().encode())
        retry = request.model_copy(update={"replaces": None})  # the replaced lease is shrunk already
        deadline = asyncio.get_running_loop().time() + settings.lease_recall_wait_s
        delay = 0.02
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
            try:
                return await ledger.acquire_lease(retry, utcnow(), policy)
            except InsufficientCredits:
                if not await ledger.other_lease_holders(request.account_id, request.holder):
                    return None  # every other lease was returned: what is left is not enough
        return None

    async def return_lease(request: LeaseReturnRequest) -> LeaseReturnReply:
        with metrics.latency.labels("billing", "lease_return").time():
            released = await ledger.return_lease(request, utcnow())
        return LeaseReturnReply(released_micro=released)

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

    auth = AuthClient(ctx.nc)

    async def admin_grant(request: AdminGrantRequest) -> Balance:
        """A grant made in the console: the caller's own credential must belong to an admin (asked
        of auth here, not taken from the gateway), and the admin is the grant's actor."""
        if request.session_token:
            user = await auth.verify_session(request.session_token)
            admin, actor = user.role == "admin", user.email
        elif request.api_key:
            identity = await auth.verify_key(request.api_key)
            admin, actor = identity.admin, identity.key_id
        else:
            raise Unauthorized("A grant needs the administrator's session or API key")
        if not admin:
            raise Forbidden("Only an administrator may grant credit")
        return await grant(request.grant.model_copy(update={"actor": actor}))

    async def balance(request: BalanceRequest) -> Balance:
        return await ledger.balance(request.account_id)

    async def credits_summary(request: CreditsSummaryRequest) -> CreditsSummary:
        credited, charged = await ledger.credits_summary(request.account_id)
        balance = await ledger.balance(request.account_id)
        return CreditsSummary(credited_micro=credited, charged_micro=charged, balance_micro=balance.balance_micro)

    async def key_spend(request: KeySpendRequest) -> KeySpend:
        spent, held = await ledger.key_spend(request.key_id)
        return KeySpend(key_id=request.key_id, spent_micro=spent, held_micro=held)

    async def transaction_list(request: TransactionsRequest) -> TransactionList:
        return TransactionList(transactions=await transactions(engine, request))

    async def health(_: HealthProbe) -> HealthReply:
        return await health_of("billing", database=ledger.ping)

    async def settle(events: list[bytes]) -> list[BaseException | None]:
        """Settle a fetched batch in one transaction; if that fails, each event on its own, so
        one event that cannot be settled never holds back the others."""
        outcomes, parsed = parse_usage_events(events)
        if not parsed:
            return outcomes
        with metrics.latency.labels("billing", "settle_batch").time():
            try:
                applied = await ledger.settle_batch([event for _, event in parsed], utcnow())
            except Exception:
                log.warning(
                    "settling a batch failed; settling its events one by one",
                    extra={"fields": {"events": len(parsed)}},
                    exc_info=True,
                )
                applied = await settle_one_by_one(parsed, outcomes)
        count_settled(applied)
        return outcomes

    async def settle_one_by_one(
        parsed: list[tuple[int, UsageEvent]], outcomes: list[BaseException | None]
    ) -> list[bool]:
        applied = []
        for i, event in parsed:
            try:
                applied.append(await ledger.settle(event, utcnow()))
            except Exception as exc:
                log.exception("settling a usage event failed; it will be redelivered")
                metrics.requests.labels("billing", "settle", "failed").inc()
                outcomes[i] = exc
        return applied

    def count_settled(applied: list[bool]) -> None:
        done = sum(applied)
        if done:
            metrics.requests.labels("billing", "settle", "applied").inc(done)
        if len(applied) > done:
            metrics.requests.labels("billing", "settle", "duplicate").inc(len(applied) - done)

    async def sweep() -> None:
        while True:
            await asyncio.sleep(settings.sweep_interval_s)
            try:
                released = await ledger.release_expired(utcnow())
                if released:
                    log.warning("released expired reservations", extra={"fields": {"count": released}})
                    metrics.holds_released.inc(released)
                expired = await ledger.expire_leases(utcnow())
                if expired:
                    log.warning("released expired credit leases", extra={"fields": {"count": expired}})
                    metrics.holds_released.inc(expired)
                # What this pass left behind (a hold it could not release): an alert's business.
                metrics.oldest_overdue_hold.set(await ledger.oldest_overdue_hold_s(utcnow()))
                metrics.last_sweep.set_to_current_time()
            except Exception:
                log.exception("reservation sweep failed")

    await ctx.start_service(
        "billing",
        {
            "reserve": (subjects.BILLING_CREDITS_RESERVE, ReserveRequest, reserve),
            "lease_acquire": (subjects.BILLING_LEASE_ACQUIRE, LeaseAcquireRequest, acquire_lease),
            "lease_return": (subjects.BILLING_LEASE_RETURN, LeaseReturnRequest, return_lease),
            "grant": (subjects.BILLING_CREDITS_GRANT, GrantRequest, grant),
            "admin_grant": (subjects.BILLING_CREDITS_ADMIN_GRANT, AdminGrantRequest, admin_grant),
            "balance": (subjects.BILLING_BALANCE_GET, BalanceRequest, balance),
            "credits_summary": (BILLING_CREDITS_SUMMARY, CreditsSummaryRequest, credits_summary),
            "key_spend": (BILLING_KEY_SPEND_GET, KeySpendRequest, key_spend),
            "transactions": (BILLING_TRANSACTIONS_LIST, TransactionsRequest, transaction_list),
            "health": (subjects.BILLING_HEALTH, HealthProbe, health),
            **topups.endpoints(),
        },
        unreachable=database_unreachable,
    )
    stop = asyncio.Event()
    consumer = asyncio.create_task(
        consume_usage_event_batches(
            ctx.js,
            subjects.BILLING_SETTLE_CONSUMER,
            settle,
            stop,
            batch=settings.settle_batch_size,
            gather_s=settings.settle_gather_s,
            pending=metrics.consumer_pending.labels(subjects.BILLING_SETTLE_CONSUMER).set,
        )
    )
    sweeper = asyncio.create_task(sweep())
    try:
        await ctx.stopped_or_failed(consumer, sweeper)
    finally:
        stop.set()
        sweeper.cancel()
        await asyncio.wait([consumer], timeout=5)
        await stripe.close()
        await ledger.close()
        await engine.dispose()


def main() -> None:
    run_until_stopped("billing", BillingSettings(), serve)
