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

An event whose credit a gateway covered from a lease (`lease_id`) has no reservation: its charge
is taken from what the lease holds (at most that much is released from `held`), and the lease
counts it. A lease returned for good (`expected_requests`) closes when its last event is settled:
what it still holds then is released. Such an event always writes its `charge:<request id>` entry
(kind `release`, amount 0, when it cost nothing), so its lease counts it once.
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


@dataclass
class LeaseRow:
    """A lease as read under lock (and as the batch leaves it, in planning)."""

    held_micro: int
    settled_requests: int
    expected_requests: int | None
    status: str  # active | returned | closed | expired
    key_id: str | None


@dataclass
class LeaseChange:
    released_micro: int = 0
    settled_micro: int = 0
    settled_requests: int = 0
    closed: bool = False


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

    @classmethod
    def release(cls, account_id: str, held_micro: int, idempotency_key: str) -> Entry:
        """Credit no longer held: the balance is unchanged, `held` falls by `held_micro`."""
        return cls(account_id, "release", 0, -held_micro, 0, idempotency_key, None)


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
    leases: dict[str, LeaseChange] = field(default_factory=dict)

    @property
    def changes_anything(self) -> bool:
        return bool(self.entries or self.balances or self.keys or self.reservations or self.leases)


def charge_key(request_id: str) -> str:
    return f"charge:{request_id}"


def charge_keys_of(events: Sequence[UsageEvent]) -> list[str]:
    """The charge entries whose existence makes an event a duplicate: every costed event's, and
    every leased event's (it writes one even at cost 0)."""
    return sorted({charge_key(e.request_id) for e in events if e.cost_pico > 0 or e.lease_id})


def plan_settlement(
    events: Sequence[UsageEvent],
    reservations: Mapping[str, ReservationRow],
    existing_charges: set[str],
    carries: Mapping[str, int],
    leases: Mapping[str, LeaseRow] | None = None,
) -> SettlementPlan:
    """`carries` holds the carry of every account that has a balances row (others have none to
    update, as before: their charge is journalled but no row changes)."""
    plan = SettlementPlan()
    carry = dict(carries)
    lease_rows = {k: LeaseRow(**vars(v)) for k, v in (leases or {}).items()}  # changed as the batch goes
    seen: set[str] = set()
    for event in events:
        request_id = event.request_id
        if event.lease_id is not None:
            duplicate = request_id in seen or charge_key(request_id) in existing_charges
            seen.add(request_id)
            plan.applied.append(not duplicate)
            if not duplicate:
                _plan_leased(plan, event, lease_rows.get(event.lease_id), carry)
            continue
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
            plan.entries.append(Entry.release(event.account_id, still_held, f"release:{request_id}"))
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


def _plan_leased(plan: SettlementPlan, event: UsageEvent, lease: LeaseRow | None, carry: dict[str, int]) -> None:
    """A leased event: charged like any other, its charge taken from what its lease holds."""
    assert event.lease_id is not None
    charged = 0
    if event.cost_pico > 0:
        charged, new_carry = apply_charge(carry.get(event.account_id, 0), event.cost_pico)
        if event.account_id in carry:
            carry[event.account_id] = new_carry
    released = closing = 0
    if lease is not None and lease.status in ("active", "returned"):
        released = min(charged, lease.held_micro)
        lease.held_micro -= released
        lease.settled_requests += 1
        change = plan.leases.setdefault(event.lease_id, LeaseChange())
        change.released_micro += released
        change.settled_micro += charged
        change.settled_requests += 1
        if lease.expected_requests is not None and lease.settled_requests >= lease.expected_requests:
            closing, lease.held_micro, lease.status = lease.held_micro, 0, "closed"
            change.released_micro += closing
            change.closed = True
    plan.entries.append(
        Entry(
            account_id=event.account_id,
            kind="charge" if event.cost_pico > 0 else "release",
            amount_micro=-charged,
            held_delta_micro=-released,
            cost_pico=event.cost_pico,
            idempotency_key=charge_key(event.request_id),
            reason=f"{event.model} {event.prompt_tokens}+{event.completion_tokens} tokens",
        )
    )
    if closing:
        plan.entries.append(Entry.release(event.account_id, closing, f"lease-close:{event.lease_id}"))
    if (event.cost_pico > 0 or closing) and event.account_id in carry:  # the carry moves with any cost
        balance = plan.balances.setdefault(event.account_id, BalanceChange())
        balance.deduct_micro += charged
        balance.release_micro += released + closing
        balance.carry_pico = carry[event.account_id]
    if charged:
        plan.keys.setdefault(event.key_id, KeyChange()).spent_micro += charged
    if lease is not None and lease.key_id and (released or closing):
        plan.keys.setdefault(lease.key_id, KeyChange()).held_micro -= released + closing
