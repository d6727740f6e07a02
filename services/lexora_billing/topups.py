"""What a top-up buys: the credit packages, custom amounts, and the price/credit mapping. Pure.

Credits are what users see (100 credits = 1 USD of balance); the ledger holds their value in
micro-USD. A package's price and its credit value differ where it carries bonus credits, so the
two are kept apart from here on: Stripe charges `price_cents`, the ledger grants `credit_micro`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.money import MICRO_PER_CREDIT

CREDITS_PER_USD = 100
CUSTOM_MIN_CENTS = 2_00
CUSTOM_MAX_CENTS = 1_000_00
CUSTOM_PACKAGE = "custom"  # how a custom amount is named in the session's metadata


@dataclass(frozen=True)
class Package:
    id: str
    credits: int
    price_cents: int

    @property
    def bonus_credits(self) -> int:
        return self.credits - self.price_cents  # a cent buys one credit without a bonus


# The packages of the product documents: the larger ones carry bonus credits.
PACKAGES: tuple[Package, ...] = (
    Package("credits_500", 500, 5_00),
    Package("credits_2000", 2_000, 15_00),
    Package("credits_5000", 5_000, 30_00),
    Package("credits_15000", 15_000, 75_00),
)


@dataclass(frozen=True)
class TopUp:
    """One purchase: what Stripe charges and what the ledger credits."""

    package: str | None  # None for a custom amount
    credits: int
    price_cents: int

    @property
    def credit_micro(self) -> int:
        return self.credits * MICRO_PER_CREDIT

    @property
    def description(self) -> str:
        return f"{self.credits:,} Lexora credits"


def package_by_id(package_id: str) -> Package:
    for package in PACKAGES:
        if package.id == package_id:
            return package
    known = ", ".join(p.id for p in PACKAGES)
    raise InvalidRequest(f"Unknown package '{package_id}'; the packages are: {known}", param="package")


def custom_amount_cents(amount_usd: Decimal) -> int:
    """A custom amount in whole cents, within $2–$1,000."""
    if not amount_usd.is_finite():
        raise InvalidRequest("'amount_usd' must be a number of US dollars", param="amount_usd")
    cents = amount_usd * 100
    if cents != cents.to_integral_value():
        raise InvalidRequest(
            f"'amount_usd' must be whole cents (at most two decimals), got {amount_usd}", param="amount_usd"
        )
    if not CUSTOM_MIN_CENTS <= cents <= CUSTOM_MAX_CENTS:
        raise InvalidRequest(
            f"'amount_usd' must be between ${CUSTOM_MIN_CENTS // 100} and ${CUSTOM_MAX_CENTS // 100:,}, "
            f"got {amount_usd}",
            param="amount_usd",
        )
    return int(cents)


def topup_for(package: str | None, amount_usd: Decimal | None) -> TopUp:
    """The purchase a checkout request asks for: a package id or a custom amount, exactly one."""
    if (package is None) == (amount_usd is None):
        raise InvalidRequest("Send either 'package' (see GET /v1/billing/packages) or 'amount_usd', not both")
    if package is not None:
        chosen = package_by_id(package)
        return TopUp(package=chosen.id, credits=chosen.credits, price_cents=chosen.price_cents)
    assert amount_usd is not None
    cents = custom_amount_cents(amount_usd)
    return TopUp(package=None, credits=cents * CREDITS_PER_USD // 100, price_cents=cents)
