"""The books after a fault, from the database itself: what was served is on record once and
charged once at tokens × price, no hold outlives the sweeper, and each balance is its grants less
its charges."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from faults.load import Outcome
from lexora_contracts.money import request_cost_pico
from lexora_contracts.registry import Pricing
from support.stack import Account, RunningStack

DISCONNECTED = 499


@dataclass
class Books:
    """What the books showed; every count but `served` and `failed` must be 0."""

    served: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    lost_usage: list[str] = field(default_factory=list)  # served (or hung up) but not on record as such
    double_records: list[str] = field(default_factory=list)
    double_charges: list[str] = field(default_factory=list)  # charged twice, or charged for a failure
    wrong_charges: list[str] = field(default_factory=list)  # cost ≠ tokens × price, charge ≠ record
    client_mismatch: list[str] = field(default_factory=list)  # the client's usage ≠ the record's
    overcharged_disconnects: list[str] = field(default_factory=list)
    leaked_holds: list[str] = field(default_factory=list)  # held past the sweeper
    unbalanced_accounts: list[str] = field(default_factory=list)  # balance ≠ grants − charges
    hangups: int = 0

    def problems(self) -> dict[str, list[str]]:
        named = {
            "lost usage": self.lost_usage,
            "double records": self.double_records,
            "double charges": self.double_charges,
            "wrong charges": self.wrong_charges,
            "client/record mismatch": self.client_mismatch,
            "overcharged disconnects": self.overcharged_disconnects,
            "leaked holds": self.leaked_holds,
            "unbalanced accounts": self.unbalanced_accounts,
        }
        return {name: found for name, found in named.items() if found}


def check_books(
    lexora: RunningStack,
    accounts: list[Account],
    granted_micro: dict[str, int],
    outcomes: list[Outcome],
    pricing: Pricing,
    hold_ttl_s: float,
    sweep_interval_s: float,
) -> Books:
    """Wait for settlement (at most the hold's life plus two sweeps), then read the books of
    `accounts`. `granted_micro`: what each account was credited in all."""
    books = Books(served=sum(o.served for o in outcomes), hangups=sum(o.kind == "hangup" for o in outcomes))
    books.failed.update(o.failure for o in outcomes if o.failed)
    ids = [a.account_id for a in accounts]
    expected = {o.request_id for o in outcomes if (o.served or o.kind == "hangup") and o.request_id}

    deadline = time.monotonic() + hold_ttl_s + 2 * sweep_interval_s + 5
    while True:
        rows = _usage_rows(lexora, ids)
        # Held: a reservation, or a credit lease billing has not closed yet (it closes once every
        # request it covered is settled, so an open one means charges still to come).
        held = _held_reservations(lexora, ids) + _open_leases(lexora, ids)
        recorded = {r["request_id"] for r in rows}
        if (expected <= recorded and not held) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    time.sleep(1.0)  # billing settles apart from usage: let the last batch commit
    rows = _usage_rows(lexora, ids)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_id.setdefault(row["request_id"], []).append(row)
    books.double_records = [rid for rid, found in by_id.items() if len(found) > 1]

    for outcome in outcomes:
        if not outcome.request_id or not (outcome.served or outcome.kind == "hangup"):
            continue
        found = by_id.get(outcome.request_id)
        if not found:
            books.lost_usage.append(outcome.request_id)
            continue
        row = found[0]
        if outcome.served:
            if row["status_code"] != 200:
                books.lost_usage.append(f"{outcome.request_id} recorded as {row['status_code']}")
            elif (outcome.prompt_tokens, outcome.completion_tokens) != (row["prompt_tokens"], row["completion_tokens"]):
                books.client_mismatch.append(outcome.request_id)
        elif outcome.error is None:  # a client that hung up (or whose stream ended first)
            if row["status_code"] == DISCONNECTED:
                # Charged for what the engine produced: at least what the client saw, and the
                # engine stopped rather than running to max_tokens.
                if not outcome.deltas <= row["completion_tokens"] < outcome.max_tokens:
                    books.overcharged_disconnects.append(
                        f"{outcome.request_id}: {row['completion_tokens']} tokens after {outcome.deltas} deltas"
                    )
            elif row["status_code"] != 200:
                books.lost_usage.append(f"{outcome.request_id} (hung up) recorded as {row['status_code']}")

    charges = _charges(lexora, ids)
    charged = Counter(c["idempotency_key"].removeprefix("charge:") for c in charges)
    books.double_charges = [rid for rid, n in charged.items() if n > 1]
    for rid in charged:
        found = by_id.get(rid)
        if found and found[0]["status_code"] not in (200, DISCONNECTED) and found[0]["cost_pico"]:
            books.double_charges.append(f"{rid}: charged for a {found[0]['status_code']}")
    cost_of_charge = {c["idempotency_key"].removeprefix("charge:"): c["cost_pico"] for c in charges}
    for row in rows:
        served = row["status_code"] in (200, DISCONNECTED)
        price = pricing.input_micro_per_mtok, pricing.output_micro_per_mtok
        cost = request_cost_pico(row["prompt_tokens"], row["completion_tokens"], *price) if served else 0
        if row["cost_pico"] != cost:
            books.wrong_charges.append(f"{row['request_id']}: recorded {row['cost_pico']} pµ$, tokens × price {cost}")
        if cost and cost_of_charge.get(row["request_id"]) != cost:
            books.wrong_charges.append(
                f"{row['request_id']}: charged {cost_of_charge.get(row['request_id'])} pµ$, tokens × price {cost}"
            )
    for rid in cost_of_charge.keys() - by_id.keys():
        books.lost_usage.append(f"{rid}: charged but not on record")

    books.leaked_holds = [f"{h['request_id']} ({h['amount_micro']} µ$)" for h in _held_reservations(lexora, ids)]
    for account_id in ids:
        [row] = lexora.query(
            "SELECT b.balance_micro, b.carry_pico, b.held_micro, "
            "(SELECT COALESCE(SUM(e.amount_micro), 0) FROM ledger_entries e WHERE e.account_id = :a) AS ledger, "
            "(SELECT COALESCE(SUM(e.held_delta_micro), 0) FROM ledger_entries e WHERE e.account_id = :a) AS held, "
            "(SELECT COALESCE(SUM(e.cost_pico), 0) FROM ledger_entries e "
            "  WHERE e.account_id = :a AND e.kind = 'charge') AS charged_pico "
            "FROM balances b WHERE b.account_id = :a",
            a=account_id,
        )
        exact = row["balance_micro"] * 10**6 - row["carry_pico"]
        if exact != granted_micro[account_id] * 10**6 - row["charged_pico"]:
            books.unbalanced_accounts.append(f"{account_id}: balance ≠ grants − charges")
        if (row["balance_micro"], row["held_micro"]) != (row["ledger"], row["held"]) or row["balance_micro"] < 0:
            books.unbalanced_accounts.append(f"{account_id}: balances row ≠ its ledger")
    return books


def _usage_rows(lexora: RunningStack, account_ids: list[str]) -> list[dict[str, Any]]:
    return lexora.query("SELECT * FROM usage_records WHERE account_id = ANY(:ids)", ids=account_ids)


def _held_reservations(lexora: RunningStack, account_ids: list[str]) -> list[dict[str, Any]]:
    return lexora.query(
        "SELECT request_id, amount_micro FROM reservations WHERE account_id = ANY(:ids) AND status = 'held'",
        ids=account_ids,
    )


def _open_leases(lexora: RunningStack, account_ids: list[str]) -> list[dict[str, Any]]:
    return lexora.query(
        "SELECT id, held_micro FROM credit_leases WHERE account_id = ANY(:ids) AND status IN ('active', 'returned')",
        ids=account_ids,
    )


def _charges(lexora: RunningStack, account_ids: list[str]) -> list[dict[str, Any]]:
    return lexora.query(
        "SELECT idempotency_key, cost_pico FROM ledger_entries WHERE account_id = ANY(:ids) AND kind = 'charge'",
        ids=account_ids,
    )
