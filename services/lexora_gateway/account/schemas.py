"""The HTTP request bodies of the account routes (what billing is asked over NATS is in
lexora_contracts.topups)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel


# The body of POST /v1/billing/checkout.
class CheckoutCreate(BaseModel):
    """Either a package id or a custom amount in USD (a JSON number or a string such as "25.50").

    Which one, and whether it is valid, billing decides (it owns the packages and the limits).
    """

    package: str | None = None
    amount_usd: Decimal | None = None
