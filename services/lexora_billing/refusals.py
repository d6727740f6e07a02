"""The 402s of a hold that cannot be placed, worded the same whichever path placed it."""

from __future__ import annotations

from lexora_contracts.errors import InsufficientCredits
from lexora_contracts.money import micro_to_usd_str


def insufficient_balance(amount_micro: int, available_micro: int) -> InsufficientCredits:
    return InsufficientCredits(
        f"Insufficient balance: this request may cost up to ${micro_to_usd_str(amount_micro)} and "
        f"${micro_to_usd_str(max(available_micro, 0))} is available. Add credits to continue."
    )


def key_limit_exceeded(limit_micro: int) -> InsufficientCredits:
    return InsufficientCredits(
        f"This API key's spend limit of ${micro_to_usd_str(limit_micro)} would be exceeded by this request. "
        "Raise the key's limit or use another key."
    )
