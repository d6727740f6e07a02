"""billing's typed client: what other packages may import from lexora_billing.

Every method is one NATS request to billing, except credit holds on a client opened with billing's
Postgres database (`BillingClient.open(nc, database_url, …)`): those run billing's own
one-statement reserve (`ledger.hold`) on the client's connection pool, one database round trip
instead of a NATS request to billing, billing's round trip to the database and billing's reply.
Either way a hold is the same rows, refused with the same 402, and settled and swept by billing.

Holds on the direct path commit asynchronously (`synchronous_commit = off` on the client's
connections): the statement is atomic and visible at once, but its commit does not wait for the
WAL to reach the disk, which was half of a hold's time. Only a Postgres crash can undo such a
commit, and only for holds of the last fraction of a second; the crash undoes each of them whole
(balance, key, entry and reservation rows together). Their jobs are still charged exactly once:
settlement charges an event whose reservation it cannot find, and its own commits are synchronous
(one flushes every earlier hold with it). The cost of the crash is that those few jobs ran without
credit set aside.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import asyncpg
from nats.aio.client import Client as NATS

from lexora_billing import ledger
from lexora_contracts import subjects
from lexora_contracts.errors import InternalError, ServiceUnavailable
from lexora_contracts.messages import (
    AdminGrantRequest,
    Balance,
    BalanceRequest,
    GrantRequest,
    HealthProbe,
    HealthReply,
    Identity,
    ReserveReply,
    ReserveRequest,
)
from lexora_contracts.topups import (
    BILLING_CHECKOUT_CREATE,
    BILLING_PACKAGES_LIST,
    BILLING_WEBHOOK_STRIPE,
    CHECKOUT_CREATE_TIMEOUT_S,
    CheckoutReply,
    CheckoutRequest,
    PackagesReply,
    PackagesRequest,
    StripeWebhookReply,
    StripeWebhookRequest,
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
from lexora_db.engine import CONNECTION_LOST, create_asyncpg_pool, create_engine, database_unreachable
from lexora_runtime.bus import call

# A hold's commit does not wait for the WAL flush (see the module docstring); settlement's do.
ASYNC_COMMIT = {"synchronous_commit": "off"}


class BillingClient:
    def __init__(self, nc: NATS, pool: asyncpg.Pool | None = None):
        self._nc = nc
        self._pool = pool

    @classmethod
    async def open(cls, nc: NATS, database_url: str | None = None, pool_size: int = 10) -> BillingClient:
        """A client that places holds on billing's database itself when given its URL."""
        if not database_url:
            return cls(nc)
        engine = create_engine(database_url)  # only to read the connection options from the URL
        try:
            # min_size=0: the caller starts while Postgres is not reachable yet, as billing does.
            pool = await create_asyncpg_pool(engine, min_size=0, max_size=pool_size, server_settings=ASYNC_COMMIT)
        finally:
            await engine.dispose()
        return cls(nc, pool)

    @property
    def holds_directly(self) -> bool:
        """Whether holds go straight to the database (else to billing over NATS)."""
        return self._pool is not None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    # ---- credit -------------------------------------------------------------------------------
    async def hold(self, identity: Identity, request_id: str, amount_micro: int, ttl_s: float) -> None:
        """Hold `amount_micro` for one job, or raise the 402 (the account's balance or the key's
        spend limit cannot cover it). Settled by billing from the job's usage event, or released
        by its sweeper after `ttl_s`."""
        if self._pool is None:
            await self.reserve(
                ReserveRequest(
                    request_id=request_id,
                    account_id=identity.account_id,
                    amount_micro=amount_micro,
                    ttl_s=ttl_s,
                    key_id=identity.key_id,
                    key_spend_limit_micro=identity.spend_limit_micro,
                )
            )
            return
        try:
            await ledger.hold(
                self._pool,
                request_id,
                identity.account_id,
                amount_micro,
                ttl_s,
                datetime.now(UTC),
                identity.key_id,  # held against only when the key has a spend limit
                identity.spend_limit_micro,
            )
        except (*CONNECTION_LOST, asyncpg.PostgresError) as exc:
            # As when billing cannot be reached: a 503 on record (500 for a statement that failed
            # on its own), nothing charged. Should the lost statement have committed, its hold is
            # released by billing's sweeper.
            if database_unreachable(exc):
                raise ServiceUnavailable(
                    "The credit ledger cannot be reached right now; retry in a few seconds"
                ) from exc
            raise InternalError("the credit ledger could not be reached") from exc

    async def reserve(self, request: ReserveRequest, timeout: float = 5.0) -> ReserveReply:
        """A hold through billing itself (what `hold` does without a database)."""
        return await call(self._nc, subjects.BILLING_CREDITS_RESERVE, request, ReserveReply, timeout=timeout)

    async def grant(
        self,
        account_id: str,
        amount_micro: int,
        idempotency_key: str,
        actor: str,
        reason: str,
        kind: Literal["adjustment", "topup"] = "adjustment",
        timeout: float = 5.0,
    ) -> Balance:
        """Add credit; a grant repeated with the same idempotency key credits once."""
        request = GrantRequest(
            account_id=account_id,
            amount_micro=amount_micro,
            idempotency_key=idempotency_key,
            actor=actor,
            reason=reason,
            kind=kind,
        )
        return await call(self._nc, subjects.BILLING_CREDITS_GRANT, request, Balance, timeout=timeout)

    async def grant_as_admin(
        self,
        account_id: str,
        amount_micro: int,
        idempotency_key: str,
        reason: str,
        *,
        session_token: str | None = None,
        api_key: str | None = None,
    ) -> Balance:
        """A grant an administrator made, proven by their session or API key (billing asks auth);
        Forbidden for anyone else."""
        grant = GrantRequest(
            account_id=account_id, amount_micro=amount_micro, idempotency_key=idempotency_key, actor="", reason=reason
        )
        request = AdminGrantRequest(grant=grant, session_token=session_token, api_key=api_key)
        return await call(self._nc, subjects.BILLING_CREDITS_ADMIN_GRANT, request, Balance)

    async def balance(self, account_id: str) -> Balance:
        return await call(self._nc, subjects.BILLING_BALANCE_GET, BalanceRequest(account_id=account_id), Balance)

    async def credits_summary(self, account_id: str) -> CreditsSummary:
        request = CreditsSummaryRequest(account_id=account_id)
        return await call(self._nc, BILLING_CREDITS_SUMMARY, request, CreditsSummary)

    async def key_spend(self, key_id: str) -> KeySpend:
        return await call(self._nc, BILLING_KEY_SPEND_GET, KeySpendRequest(key_id=key_id), KeySpend)

    async def transactions(self, request: TransactionsRequest) -> TransactionList:
        """Credits one by one and charges per day, newest first (holds and releases left out)."""
        return await call(self._nc, BILLING_TRANSACTIONS_LIST, request, TransactionList, timeout=15.0)

    # ---- top-ups ------------------------------------------------------------------------------
    async def packages(self) -> PackagesReply:
        return await call(self._nc, BILLING_PACKAGES_LIST, PackagesRequest(), PackagesReply)

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutReply:
        return await call(self._nc, BILLING_CHECKOUT_CREATE, request, CheckoutReply, timeout=CHECKOUT_CREATE_TIMEOUT_S)

    async def stripe_webhook(self, payload: str, signature: str | None) -> StripeWebhookReply:
        request = StripeWebhookRequest(payload=payload, signature=signature)
        return await call(self._nc, BILLING_WEBHOOK_STRIPE, request, StripeWebhookReply)

    async def health(self, timeout: float = 2.0) -> HealthReply:
        return await call(self._nc, subjects.BILLING_HEALTH, HealthProbe(), HealthReply, timeout=timeout)
