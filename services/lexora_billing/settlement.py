"""What settling a batch of usage events changes, decided in memory from the rows it touches.

Settlement is planned here and written by the ledger in one transaction per batch. The plan is a
pure function of the events (in stream order) and of the rows read under lock at the start of that
transaction: the events' reservations, the charge entries that already exist, and the accounts'
carried sub-micro remainders. Each event gets exactly what a transaction of its own used to do:

- an event whose reservation is already settled, whose charge entry already exists, or whose
  request id came earlier in the same batch is a duplicate and changes nothing;
- otherwise its exact cost is charged (a `charge:<request id>` entry; whole micro-USD deducted,
  the remainder carried on the account, chained from one event to the next of the same account),
  the rest of its hold is released (a `release:<request id>` entry), its key's spend is counted,
  and its reservation is marked settled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lexora_contracts.messages import UsageEvent
from lexora_contracts.money import apply_charge


@dataclass(frozen=True)
class ReservationRow:
    amount_micro: int
    status: str  # held | settled | released
    key_id: str | None


@dataclass(frozen=True)
class Entry:
    """One ledger entry to append (actor "billing", created now)."""

    account_id: str
    kind: str  # charge | release
    amount_micro: int
    held_delta_micro: int
    cost_pico: int
    idempotency_key: str
    reason: str | None


@dataclass
class BalanceChange:
    deduct_micro: int = 0
    release_micro: int = 0
    carry_pico: int = 0  # the account's carry after the batch


@dataclass
class KeyChange:
    spent_micro: int = 0
    held_micro: int = 0  # a delta: negative when holds are released


@dataclass
class SettlementPlan:
    applied: list[bool] = field(default_factory=list)  # per event, in input order
    entries: list[Entry] = field(default_factory=list)
    balances: dict[str, BalanceChange] = field(default_factory=dict)
    keys: dict[str, KeyChange] = field(default_factory=dict)
    reservations: dict[str, int] = field(default_factory=dict)  # request id -> charged micro-USD

    @property
    def changes_anything(self) -> bool:
        return bool(self.entries or self.balances or self.keys or self.reservations)


def charge_key(request_id: str) -> str:
    return f"charge:{request_id}"


def plan_settlement(
    events: Sequence[UsageEvent],
    reservations: Mapping[str, ReservationRow],
    existing_charges: set[str],
    carries: Mapping[str, int],
) -> SettlementPlan:
    """`carries` holds the carry of every account that has a balances row (others have none to
    update, as before: their charge is journalled but no row changes)."""
    plan = SettlementPlan()
    carry = dict(carries)
    seen: set[str] = set()
    for event in events:
        request_id = event.request_id
        reservation = reservations.get(request_id)
        duplicate = (
            request_id in seen
            or (reservation is not None and reservation.status == "settled")
            or (event.cost_pico > 0 and charge_key(request_id) in existing_charges)
        )
        seen.add(request_id)
        if duplicate:
            plan.applied.append(False)
            continue
        plan.applied.append(True)
        # A hold the sweeper already released is no longer part of held_micro.
        still_held = reservation.amount_micro if reservation is not None and reservation.status == "held" else 0
        charged = 0
        if event.cost_pico > 0:
            charged, new_carry = apply_charge(carry.get(event.account_id, 0), event.cost_pico)
            plan.entries.append(
                Entry(
                    account_id=event.account_id,
                    kind="charge",
                    amount_micro=-charged,
                    held_delta_micro=0,
                    cost_pico=event.cost_pico,
                    idempotency_key=charge_key(request_id),
                    reason=f"{event.model} {event.prompt_tokens}+{event.completion_tokens} tokens",
                )
            )
            if event.account_id in carry:
                carry[event.account_id] = new_carry
        if still_held:
            plan.entries.append(
                Entry(
                    account_id=event.account_id,
                    kind="release",
                    amount_micro=0,
                    held_delta_micro=-still_held,
                    cost_pico=0,
                    idempotency_key=f"release:{request_id}",
                    reason=None,
                )
            )
        if (event.cost_pico > 0 or still_held) and event.account_id in carry:
            change = plan.balances.setdefault(event.account_id, BalanceChange())
            change.deduct_micro += charged
            change.release_micro += still_held
            change.carry_pico = carry[event.account_id]
        key_held = still_held if reservation is not None and reservation.key_id else 0
        if charged or key_held:
            key = plan.keys.setdefault(event.key_id, KeyChange())
            key.spent_micro += charged
            key.held_micro -= key_held
        if reservation is not None:
            plan.reservations[request_id] = charged
    return plan
