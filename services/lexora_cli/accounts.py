"""Opening an account with credit: auth creates it (and its first key), billing grants the credit.

What an operator does with `lexora admin create-key`, and what the tests and benchmarks do for
every account they use.
"""

from __future__ import annotations

from dataclasses import dataclass

from lexora_auth.client import AuthClient
from lexora_billing.client import BillingClient
from lexora_contracts.messages import CreateAccountReply, Plan


@dataclass(frozen=True)
class FundedAccount:
    account: CreateAccountReply  # holds the first API key, shown this once
    balance_micro: int


async def open_funded_account(
    auth: AuthClient,
    billing: BillingClient,
    credit_micro: int,
    *,
    plan: Plan = "free",
    name: str | None = None,
    actor: str = "admin",
    reason: str = "initial credit at account creation",
) -> FundedAccount:
    """A new account, granted `credit_micro` once (the grant's idempotency key is the account's)."""
    account = await auth.create_account(plan=plan, name=name)
    if not credit_micro:
        return FundedAccount(account, 0)
    balance = await billing.grant(
        account.account_id,
        credit_micro,
        idempotency_key=f"create-key:{account.account_id}",
        actor=actor,
        reason=reason,
        timeout=30,
    )
    return FundedAccount(account, balance.balance_micro)
