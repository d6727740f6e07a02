"""billing's typed client: what other packages may import from lexora_billing.

Every method is one NATS request to billing. A gateway covers its requests' credit from leases
(`acquire_lease` / `return_lease`, docs/billing.md "Credit leases"); `hold` places a reservation
for one job through billing (`billing.v1.credits.reserve`). Nothing here connects to a database.
"""

from __future__ import annotations

from typing import Literal

from nats.aio.client import Client as NATS

from lexora_contracts import subjects
from lexora_contracts.messages import (
    AdminGrantRequest,
    Balance,
    BalanceRequest,
    GrantRequest,
    HealthProbe,
    HealthReply,
    Identity,
    LeaseAcquireRequest,
    LeaseGrant,
    LeaseReturnReply,
    LeaseReturnRequest,
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
from lexora_runtime.bus import call


class BillingClient:
    def __init__(self, nc: NATS):
        self._nc = nc

    async def close(self) -> None:
        """Nothing to close (kept for callers that close their clients)."""

    # ---- credit -------------------------------------------------------------------------------
    async def hold(self, identity: Identity, request_id: str, amount_micro: int, ttl_s: float) -> None:
        """Hold `amount_micro` for one job through billing, or raise the 402 (the account's balance
        or the key's spend limit cannot cover it). Settled by billing from the job's usage event,
        or released by its sweeper after `ttl_s`."""
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

    async def acquire_lease(self, request: LeaseAcquireRequest, timeout: float = 5.0) -> LeaseGrant:
        """A credit lease for a gateway replica (402 when the account or key cannot cover
        `need_micro`)."""
        return await call(self._nc, subjects.BILLING_LEASE_ACQUIRE, request, LeaseGrant, timeout=timeout)

    async def return_lease(self, request: LeaseReturnRequest, timeout: float = 5.0) -> LeaseReturnReply:
        """Give back what a lease holds beyond `keep_micro`."""
        return await call(self._nc, subjects.BILLING_LEASE_RETURN, request, LeaseReturnReply, timeout=timeout)

    async def reserve(self, request: ReserveRequest, timeout: float = 5.0) -> ReserveReply:
        """A reservation for one job, placed by billing."""
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
