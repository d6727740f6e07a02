"""Money arithmetic in integers only.

The ledger unit is the micro-USD. A per-token price is tiny (Llama-3.2-3B costs $0.04 per 1M tokens,
i.e. 0.04 micro-USD per token), so exact request costs are kept in pico-USD (1e-6 micro-USD) and an
account carries its sub-micro remainder forward: no request is ever rounded in anyone's favour, and
the sum of ledger charges equals the sum of exact costs to within one micro-USD at any moment.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation

PICO_PER_MICRO = 1_000_000
PICO_PER_USD = 10**12
MICRO_PER_USD = 1_000_000
MICRO_PER_CREDIT = MICRO_PER_USD // 100  # 100 credits = 1 USD
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are per 1M tokens


def token_cost_pico(tokens: int, micro_usd_per_mtok: int) -> int:
    """Exact cost of `tokens` at a price in micro-USD per 1M tokens, in pico-USD."""
    # micro/1M tokens * tokens = micro * tokens / 1e6 = pico * tokens (since 1 micro = 1e6 pico).
    return tokens * micro_usd_per_mtok


def request_cost_pico(prompt_tokens: int, completion_tokens: int, input_price: int, output_price: int) -> int:
    return token_cost_pico(prompt_tokens, input_price) + token_cost_pico(completion_tokens, output_price)


def image_cost_pico(images: int, micro_usd_per_image: int) -> int:
    return images * micro_usd_per_image * PICO_PER_MICRO


def ceil_micro(pico: int) -> int:
    return -(-pico // PICO_PER_MICRO)


def apply_charge(carry_pico: int, cost_pico: int) -> tuple[int, int]:
    """Split an exact cost into whole micro-USD to deduct now and the remainder carried forward.

    Returns (micro_to_deduct, new_carry_pico) with 0 <= new_carry_pico < PICO_PER_MICRO.
    """
    total = carry_pico + cost_pico
    return total // PICO_PER_MICRO, total % PICO_PER_MICRO


def pico_to_usd(pico: int) -> float:
    """For display only (OpenRouter-style `usage.cost` is a JSON number in USD)."""
    return float(Decimal(pico) / Decimal(10**12))


def micro_to_usd_str(micro: int) -> str:
    return str((Decimal(micro) / MICRO_PER_USD).quantize(Decimal("0.000001")))


def usd_to_micro(usd: str | int | float) -> int:
    """Parse a user-typed USD amount exactly (no float rounding), truncating below one micro-USD."""
    try:
        value = Decimal(str(usd))
    except InvalidOperation as exc:
        raise ValueError(f"not a USD amount: {usd!r}") from exc
    if not value.is_finite() or value < 0:
        raise ValueError(f"USD amount must be a non-negative number, got {usd!r}")
    return int((value * MICRO_PER_USD).to_integral_value(rounding=ROUND_DOWN))


def usd_per_mtok_to_micro(usd: str | float) -> int:
    """A catalog price such as "0.04" ($ per 1M tokens) as micro-USD per 1M tokens."""
    return usd_to_micro(usd)
