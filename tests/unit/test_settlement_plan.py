"""The settlement plan: what a batch of usage events changes, decided from the rows it read."""

from __future__ import annotations

from lexora_billing.settlement import BalanceChange, KeyChange, ReservationRow, plan_settlement
from lexora_contracts.messages import UsageEvent
from lexora_contracts.money import PICO_PER_MICRO


def event(request_id: str, account: str = "a", cost: int = 0, key: str = "k") -> UsageEvent:
    return UsageEvent(
        request_id=request_id,
        account_id=account,
        key_id=key,
        model="m",
        status_code=200,
        prompt_tokens=1,
        completion_tokens=2,
        cost_pico=cost,
        received_at=0,
        latency_ms=1,
    )


def held(amount: int = 10, key: str | None = None) -> ReservationRow:
    return ReservationRow(amount_micro=amount, status="held", key_id=key)


def test_carry_chains_through_the_events_of_one_account() -> None:
    third = PICO_PER_MICRO // 3 + 1
    events = [event(f"r{i}", cost=third) for i in range(3)]
    plan = plan_settlement(events, {e.request_id: held() for e in events}, set(), {"a": 0})
    assert plan.applied == [True, True, True]
    assert [-e.amount_micro for e in plan.entries if e.kind == "charge"] == [0, 0, 1]
    carry = 3 * third - PICO_PER_MICRO
    assert plan.balances == {"a": BalanceChange(deduct_micro=1, release_micro=30, carry_pico=carry)}
    assert plan.reservations == {"r0": 0, "r1": 0, "r2": 1}


def test_duplicates_change_nothing() -> None:
    events = [event("new", cost=5), event("settled", cost=5), event("charged", cost=5), event("new", cost=5)]
    reservations = {"new": held(), "settled": ReservationRow(10, "settled", None)}
    plan = plan_settlement(events, reservations, {"charge:charged"}, {"a": 7})
    assert plan.applied == [True, False, False, False]
    assert [e.idempotency_key for e in plan.entries] == ["charge:new", "release:new"]
    assert plan.balances == {"a": BalanceChange(deduct_micro=0, release_micro=10, carry_pico=12)}


def test_a_released_hold_is_not_released_again_and_keys_count_what_they_spent() -> None:
    events = [event("swept", cost=3 * PICO_PER_MICRO), event("limited", cost=PICO_PER_MICRO, key="lim")]
    reservations = {"swept": ReservationRow(10, "released", None), "limited": held(4, key="lim")}
    plan = plan_settlement(events, reservations, set(), {"a": 0})
    assert [e.kind for e in plan.entries] == ["charge", "charge", "release"]
    assert plan.balances["a"] == BalanceChange(deduct_micro=4, release_micro=4, carry_pico=0)
    assert plan.keys == {"k": KeyChange(spent_micro=3, held_micro=0), "lim": KeyChange(spent_micro=1, held_micro=-4)}


def test_events_that_held_nothing_and_cost_nothing_only_count_as_applied() -> None:
    plan = plan_settlement([event("refused"), event("free", account="b")], {}, set(), {"a": 0})
    assert plan.applied == [True, True]
    assert not plan.changes_anything


def test_an_account_without_a_balance_row_is_journalled_without_a_row_to_update() -> None:
    plan = plan_settlement([event("x", account="ghost", cost=PICO_PER_MICRO)], {}, set(), {})
    assert [e.idempotency_key for e in plan.entries] == ["charge:x"]
    assert plan.balances == {}


def test_leased_events_are_charged_against_their_lease_which_closes_with_its_last_event() -> None:
    from lexora_billing.settlement import LeaseChange, LeaseRow

    def leased(request_id: str, cost_micro: int) -> UsageEvent:
        return event(request_id, cost=cost_micro * PICO_PER_MICRO).model_copy(update={"lease_id": "L"})

    lease = LeaseRow(held_micro=100, settled_requests=1, expected_requests=3, status="returned", key_id=None)
    events = [leased("x", 30), leased("free", 0), leased("x", 30)]
    plan = plan_settlement(events, {}, set(), {"a": 0}, {"L": lease})
    assert plan.applied == [True, True, False]
    assert [(e.kind, e.amount_micro, e.held_delta_micro, e.idempotency_key) for e in plan.entries] == [
        ("charge", -30, -30, "charge:x"),
        ("release", 0, 0, "charge:free"),
        ("release", 0, -70, "lease-close:L"),
    ]
    assert plan.leases == {"L": LeaseChange(released_micro=100, settled_micro=30, settled_requests=2, closed=True)}
    assert plan.balances == {"a": BalanceChange(deduct_micro=30, release_micro=100, carry_pico=0)}
    assert lease.held_micro == 100, "the rows read are not changed"
    # The charge entries that exist make a leased event a duplicate, even at cost 0.
    again = plan_settlement([leased("free", 0)], {}, {"charge:free"}, {"a": 0}, {"L": lease})
    assert again.applied == [False] and not again.changes_anything


def test_a_leased_cost_below_one_micro_still_moves_the_carry() -> None:
    from lexora_billing.settlement import LeaseRow

    lease = LeaseRow(held_micro=100, settled_requests=0, expected_requests=None, status="active", key_id=None)
    tiny = event("tiny", cost=PICO_PER_MICRO // 2).model_copy(update={"lease_id": "L"})
    plan = plan_settlement([tiny], {}, set(), {"a": 0}, {"L": lease})
    assert plan.balances == {"a": BalanceChange(deduct_micro=0, release_micro=0, carry_pico=PICO_PER_MICRO // 2)}
