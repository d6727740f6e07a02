from decimal import Decimal

import pytest

from lexora_contracts.money import (
    PICO_PER_MICRO,
    apply_charge,
    ceil_micro,
    micro_to_usd_str,
    request_cost_pico,
    usd_to_micro,
)


def test_cost_is_exact_for_sub_micro_prices() -> None:
    # $0.04 per 1M tokens: 35 tokens cost 1.4 micro-USD, exactly.
    assert request_cost_pico(25, 10, 40_000, 40_000) == 1_400_000


def test_charges_carry_the_remainder_so_nothing_is_rounded_away() -> None:
    carry, deducted = 0, 0
    costs = [1_400_000, 999_999, 1, 2_500_000, 40_000] * 7
    for cost in costs:
        micro, carry = apply_charge(carry, cost)
        deducted += micro
        assert 0 <= carry < PICO_PER_MICRO
    assert deducted * PICO_PER_MICRO + carry == sum(costs)


def test_ceil_micro_rounds_up_only_fractions() -> None:
    assert ceil_micro(0) == 0
    assert ceil_micro(1) == 1
    assert ceil_micro(PICO_PER_MICRO) == 1
    assert ceil_micro(PICO_PER_MICRO + 1) == 2


@pytest.mark.parametrize(("usd", "micro"), [("5", 5_000_000), ("0.25", 250_000), (2, 2_000_000), ("0.0000019", 1)])
def test_usd_parses_exactly(usd: str, micro: int) -> None:
    assert usd_to_micro(usd) == micro


@pytest.mark.parametrize("bad", ["-1", "abc", "nan", "inf"])
def test_usd_refuses_nonsense(bad: str) -> None:
    with pytest.raises(ValueError):
        usd_to_micro(bad)


def test_usd_display_has_micro_precision() -> None:
    assert micro_to_usd_str(4_999_996) == "4.999996"
    assert Decimal(micro_to_usd_str(1)) == Decimal("0.000001")
