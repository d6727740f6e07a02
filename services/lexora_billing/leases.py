"""Credit leases in the database (docs/billing.md "Credit leases").

A gateway replica covers its requests' worst-case cost from a lease it holds in memory instead of
a reservation per request. Here billing grants, shrinks and expires those leases; settlement
charges against them (`settlement`).

- acquire is ONE statement: the account's balance row locked, its spend in the last minute read,
  the lease sized from both (at least what the request needs, at most `cap` and what is
  available; for a key with a spend limit also at most the key's headroom), held on the balance
  (and the key), journaled (`lease:<id>`, `held_delta_micro = +amount`) and recorded, or nothing
  at all when the account (or the key) cannot cover the need;
- return shrinks what a lease holds to what its holder may still be charged for (`keep_micro`
  less what was settled already; never more than it holds), journaled
  (`lease-release:<id>:<held after>`, a key unique because `held` only falls);
- expiry (the sweeper) releases what an unreturned lease, or a returned one whose last usage
  events never came, still holds.

Every writer locks the lease row before the balance row, the order settlement uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

# $1 lease id, $2 account, $3 need, $4 cap, $5 now, $6 expires, $7 holder, $8 spend multiple,
# $9 need multiple, and for a key with a limit: $10 key, $11 its limit. `account` locks the balance
# row first (the newest version), so concurrent acquisitions on one account take turns.
_RECENT = """
WITH recent AS (
    SELECT COALESCE(-SUM(amount_micro), 0) AS spent FROM ledger_entries
    WHERE account_id = $2::text AND kind = 'charge' AND created_at > $5::timestamptz - interval '60 seconds'
), account AS (
    SELECT balance_micro - held_micro AS available FROM balances WHERE account_id = $2::text FOR UPDATE
), """

# The lease's size before what the account (and key) can cover: at least the need, else the larger
# of the spend multiple × the last minute's charges and the need multiple × the need, at most the cap.
_WANTED = "GREATEST($3::bigint, LEAST($4::bigint, GREATEST($8::bigint * recent.spent, $9::bigint * $3::bigint)))"

_SIZE_AND_HOLD = """
held AS (
    UPDATE balances b SET held_micro = b.held_micro + size.amount, updated_at = $5::timestamptz
    FROM size WHERE b.account_id = $2::text
    RETURNING size.amount
), entry AS (
    INSERT INTO ledger_entries
        (account_id, kind, amount_micro, held_delta_micro, cost_pico, idempotency_key, actor, created_at)
    SELECT $2::text, 'hold', 0, amount, 0, 'lease:' || $1::text, 'billing', $5::timestamptz FROM held
), lease AS (
    INSERT INTO credit_leases
        (id, account_id, key_id, holder, amount_micro, held_micro, settled_micro, settled_requests,
         status, created_at, expires_at)
    SELECT $1::text, $2::text, {key}, $7::text, amount, amount, 0, 0, 'active', $5::timestamptz,
           $6::timestamptz FROM held
)
"""

ACQUIRE = (
    _RECENT.lstrip()
    + """size AS (
    SELECT LEAST({wanted}, account.available) AS amount
    FROM account, recent WHERE account.available >= $3::bigint
), """.replace("{wanted}", _WANTED)
    + _SIZE_AND_HOLD.strip().replace("{key}", "NULL")
    + """
SELECT (SELECT amount FROM held) AS amount, (SELECT available FROM account) AS available,
       NULL::bigint AS key_used
"""
)

ACQUIRE_WITH_KEY_LIMIT = (
    _RECENT.lstrip()
    + """key_row AS (
    SELECT spent_micro + held_micro AS used FROM key_spend WHERE key_id = $10::text FOR UPDATE
), headroom AS (
    SELECT $11::bigint - COALESCE((SELECT used FROM key_row), 0) AS left
), wanted AS (
    SELECT LEAST({wanted}, account.available, headroom.left) AS amount
    FROM account, recent, headroom WHERE account.available >= $3::bigint AND headroom.left >= $3::bigint
), key_hold AS (
    INSERT INTO key_spend AS k (key_id, spent_micro, held_micro)
    SELECT $10::text, 0, amount FROM wanted
    ON CONFLICT (key_id) DO UPDATE SET held_micro = k.held_micro + EXCLUDED.held_micro
    WHERE k.spent_micro + k.held_micro + EXCLUDED.held_micro <= $11::bigint
    RETURNING k.key_id
), size AS (
    SELECT amount FROM wanted WHERE EXISTS (SELECT 1 FROM key_hold)
), """.replace("{wanted}", _WANTED)
    + _SIZE_AND_HOLD.strip().replace("{key}", "$10::text")
    + """
SELECT (SELECT amount FROM held) AS amount, (SELECT available FROM account) AS available,
       (SELECT used FROM key_row) AS key_used
"""
)

LOCK_LEASE = """
SELECT account_id, key_id, holder, held_micro, settled_micro, settled_requests, status FROM credit_leases
WHERE id = $1::text FOR UPDATE
"""

# $1 lease, $2 account, $3 key (NULL: none held), $4 released, $5 new held, $6 status,
# $7 expected requests, $8 now
RELEASE = """
WITH entry AS (
    INSERT INTO ledger_entries
        (account_id, kind, amount_micro, held_delta_micro, cost_pico, idempotency_key, actor, created_at)
    SELECT $2::text, 'release', 0, -$4::bigint, 0, 'lease-release:' || $1::text || ':' || $5::bigint,
           'billing', $8::timestamptz
    WHERE $4::bigint > 0
), balance AS (
    UPDATE balances SET held_micro = held_micro - $4::bigint, updated_at = $8::timestamptz
    WHERE account_id = $2::text AND $4::bigint > 0
), key_row AS (
    UPDATE key_spend SET held_micro = held_micro - $4::bigint
    WHERE key_id = $3::text AND $4::bigint > 0
)
UPDATE credit_leases SET held_micro = $5::bigint, status = $6::text,
    expected_requests = COALESCE($7::int, expected_requests),
    closed_at = CASE WHEN $6::text IN ('closed', 'expired') THEN $8::timestamptz ELSE closed_at END
WHERE id = $1::text
"""


class LeaseRefused(Exception):
    def __init__(self, reason: str, available_micro: int):
        super().__init__(reason)
        self.reason = reason  # "balance" | "key_limit"
        self.available_micro = available_micro


@dataclass(frozen=True)
class LeasePolicy:
    """How large a lease is: at least the request's need, else the larger of `spend_multiple` × the
    account's charges in the last minute and `need_multiple` × the need (an account with no spend
    history yet gets room for several requests, not one lease per request), at most `cap_micro`
    and what the account (and key) can cover."""

    cap_micro: int
    spend_multiple: int = 2
    need_multiple: int = 10


async def acquire(
    conn: asyncpg.Connection,
    lease_id: str,
    holder: str,
    account_id: str,
    need_micro: int,
    ttl_s: float,
    now: datetime,
    policy: LeasePolicy,
    key_id: str | None = None,
    key_limit_micro: int | None = None,
) -> int:
    """Grant a lease (one statement); returns its amount, or raises LeaseRefused. A lease id that
    exists already fails with a unique violation and changes nothing."""
    expires = now + timedelta(seconds=ttl_s)
    common = (
        *(lease_id, account_id, need_micro, policy.cap_micro, now, expires, holder),
        *(policy.spend_multiple, policy.need_multiple),
    )
    if key_id is None or key_limit_micro is None:
        row = await conn.fetchrow(ACQUIRE, *common)
    else:
        row = await conn.fetchrow(ACQUIRE_WITH_KEY_LIMIT, *common, key_id, key_limit_micro)
    if row["amount"] is not None:
        return int(row["amount"])
    available = row["available"] or 0
    if key_limit_micro is not None and (row["key_used"] or 0) + need_micro > key_limit_micro:
        raise LeaseRefused("key_limit", available)  # the key is reported first, as for reservations
    raise LeaseRefused("balance", available)


async def shrink(
    conn: asyncpg.Connection, lease_id: str, keep_micro: int, requests: int, final: bool, now: datetime
) -> int:
    """Apply a holder's return (in the caller's transaction); returns what was released."""
    row = await conn.fetchrow(LOCK_LEASE, lease_id)
    if row is None or row["status"] not in ("active", "returned"):
        return 0
    held = row["held_micro"]
    status, expected = row["status"], None
    new_held = min(held, max(keep_micro - row["settled_micro"], 0))
    if final:
        expected, status = requests, "returned"
        if row["settled_requests"] >= requests:
            new_held, status = 0, "closed"
    released = held - new_held
    await conn.execute(RELEASE, lease_id, row["account_id"], row["key_id"], released, new_held, status, expected, now)
    return released


async def expire(conn: asyncpg.Connection, lease_id: str, now: datetime) -> int:
    """Release what an expired lease still holds (in the caller's transaction)."""
    row = await conn.fetchrow(LOCK_LEASE, lease_id)
    if row is None or row["status"] not in ("active", "returned"):
        return 0
    held = row["held_micro"]
    await conn.execute(RELEASE, lease_id, row["account_id"], row["key_id"], held, 0, "expired", None, now)
    return int(held)


EXPIRED = """
SELECT id FROM credit_leases WHERE status IN ('active', 'returned') AND expires_at < $1::timestamptz
ORDER BY expires_at LIMIT 1000
"""

OTHER_HOLDERS = """
SELECT DISTINCT holder FROM credit_leases
WHERE account_id = $1::text AND status = 'active' AND holder <> $2::text AND held_micro > 0
"""
