from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from lexora_contracts.topups import CHECKOUT_CREATE_TIMEOUT_S
from lexora_runtime.settings import DatabaseSettings


class BillingSettings(DatabaseSettings):
    # How often held reservations past their expiry (a crashed gateway/router) are released.
    sweep_interval_s: float = 5.0
    # Usage events settled per transaction, at most (a batch is whatever is ready, up to this).
    settle_batch_size: int = Field(default=256, ge=1, le=1000)
    # How long a batch that is not full waits after its first event for more (seconds): fewer,
    # larger transactions at moderate load, for at most this much later settlement.
    settle_gather_s: float = Field(default=0.05, ge=0, le=1)
    # Connections of the Postgres pool that reserve and settle use (besides SQLAlchemy's).
    database_pool_size: int = Field(default=10, ge=1)
    # Credit leases (docs/billing.md "Credit leases"): a lease is at least what the request needs,
    # else the larger of lease_spend_multiple × the account's charges in the last minute and
    # lease_need_multiple × the need, at most lease_cap_micro (and what the account can cover).
    # A refused acquisition while other replicas' leases hold credit on the account recalls it and
    # retries for up to lease_recall_wait_s.
    lease_cap_micro: int = Field(default=1_000_000, ge=0)
    lease_spend_multiple: int = Field(default=2, ge=0)
    lease_need_multiple: int = Field(default=10, ge=1)
    lease_recall_wait_s: float = Field(default=1.0, ge=0)
    # Stripe top-ups. Without a secret key there is no checkout (credit comes from admin grants);
    # without a webhook secret, webhooks are refused. Both come from the Stripe dashboard.
    stripe_secret_key: SecretStr | None = None  # LEXORA_STRIPE_SECRET_KEY (sk_live_… / sk_test_…)
    stripe_webhook_secret: SecretStr | None = None  # LEXORA_STRIPE_WEBHOOK_SECRET (whsec_…)
    # Where users reach this installation (checkout returns them to <public_url>/billing/…).
    public_url: str | None = None  # LEXORA_PUBLIC_URL
    # Billing gives up on Stripe before the gateway gives up on billing, so the caller gets a 502.
    stripe_timeout_s: float = Field(default=15.0, gt=0, lt=CHECKOUT_CREATE_TIMEOUT_S)

    @field_validator("stripe_secret_key", "stripe_webhook_secret", "public_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Deployments often template an unset secret as an empty variable.
        return None if isinstance(value, str) and not value.strip() else value
