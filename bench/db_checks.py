"""What the database says after load: waiting until billing and usage have caught up, settlement
figures for a window of requests, and the exactly-once check over a whole run (every request
charged once, every credit lease closed and equal to its requests' charges, balances and holds
equal to their ledger entries).

Requests through the stack are covered from credit leases (docs/billing.md "Credit leases"): they
have no reservation, their settlement is the `charge:<request id>` ledger entry billing writes
against the lease. The bench's own tools that talk to billing or the router directly
(`python -m bench billing-load`, the hop probe) still reserve per request, with request ids that
start with `bench-` (TOOL_REQUEST_PREFIX); the gateway's never do.

The SQL lives here; what is made of its rows (figures, verdicts) is pure and unit-tested.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import asyncpg

TOOL_REQUEST_PREFIX = "bench-"

# What must be zero before figures are read: each count is something billing or usage has still
# to do (they consume the usage events independently, at their own pace).
UNSETTLED = """
SELECT
  (SELECT count(*) FROM reservations WHERE status = 'held') AS reservations_held,
  (SELECT count(*) FROM reservations r WHERE NOT EXISTS
     (SELECT 1 FROM usage_records u WHERE u.request_id = r.request_id)) AS reservations_not_recorded_by_usage,
  (SELECT count(*) FROM credit_leases WHERE status IN ('active', 'returned')) AS leases_open,
  (SELECT count(*) FROM usage_records u WHERE u.cost_pico > 0 AND NOT EXISTS
     (SELECT 1 FROM ledger_entries l WHERE l.idempotency_key = 'charge:' || u.request_id))
     AS costed_requests_not_charged,
  (SELECT count(*) FROM ledger_entries l WHERE l.idempotency_key LIKE 'charge:%' AND NOT EXISTS
     (SELECT 1 FROM usage_records u WHERE u.request_id = substr(l.idempotency_key, 8)))
     AS charges_not_recorded_by_usage,
  (SELECT count(*) FROM balances WHERE held_micro <> 0) AS balances_holding
"""

# Settlement of the requests the stack served in a window: $1 accounts, $2 since, $3 until. A
# request is settled when its charge entry exists (one at most: ledger keys are unique); its lag
# runs from the end of the request (when the router published its usage event) to that entry.
REQUEST_WINDOW = """
WITH w AS (
    SELECT u.cost_pico, u.received_at, u.received_at + u.latency_ms * interval '1 millisecond' AS ended_at,
           l.created_at AS charged_at, l.cost_pico AS charged_pico
    FROM usage_records u LEFT JOIN ledger_entries l ON l.idempotency_key = 'charge:' || u.request_id
    WHERE u.account_id = ANY($1::text[]) AND u.received_at >= $2 AND u.received_at <= $3
)
SELECT count(*) AS requests,
       count(*) FILTER (WHERE cost_pico > 0) AS costed,
       count(*) FILTER (WHERE charged_at IS NOT NULL) AS settled,
       extract(epoch FROM max(charged_at) - min(received_at)) AS span_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM charged_at - ended_at)) AS lag_p50_s,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM charged_at - ended_at)) AS lag_p99_s,
       count(*) FILTER (WHERE cost_pico > 0 AND charged_at IS NULL) AS not_charged_once,
       count(*) FILTER (WHERE charged_at IS NOT NULL AND charged_pico <> cost_pico) AS charge_differs_from_usage,
       (SELECT count(*) FROM credit_leases k WHERE k.account_id = ANY($1::text[])
          AND k.created_at >= $2 AND k.created_at <= $3) AS leases
FROM w
"""

# Settlement of the reservations `python -m bench billing-load` made: $1 request-id prefix.
RESERVATION_WINDOW = """
SELECT count(*) AS reservations,
       count(*) FILTER (WHERE r.status = 'settled') AS settled,
       extract(epoch FROM max(r.closed_at) - min(r.created_at)) AS span_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.closed_at - r.created_at)) AS lag_p50_s,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM r.closed_at - r.created_at)) AS lag_p99_s,
       count(*) FILTER (WHERE (SELECT count(*) FROM ledger_entries l
                               WHERE l.idempotency_key = 'charge:' || r.request_id) <> 1) AS not_charged_once,
       count(*) FILTER (WHERE NOT EXISTS (
            SELECT 1 FROM usage_records u JOIN ledger_entries l
              ON l.idempotency_key = 'charge:' || u.request_id AND l.cost_pico = u.cost_pico
            WHERE u.request_id = r.request_id)) AS charge_differs_from_usage
FROM reservations r WHERE r.request_id LIKE $1
"""

# The exactly-once check over the whole run. Counts only (the first three are what the run did).
TOTALS = {
    "usage_records": "SELECT count(*) FROM usage_records",
    "charges": "SELECT count(*) FROM ledger_entries WHERE kind = 'charge'",
    "reservations": "SELECT count(*) FROM reservations",
    "credit_leases": "SELECT count(*) FROM credit_leases",
}
CHECKS = {
    "reservations_not_settled": "SELECT count(*) FROM reservations WHERE status <> 'settled'",
    "duplicate_ledger_keys": (
        "SELECT count(*) FROM (SELECT idempotency_key FROM ledger_entries GROUP BY 1 HAVING count(*) > 1) d"
    ),
    "charged_usage_without_exactly_one_matching_charge": """
        SELECT count(*) FROM usage_records u WHERE u.cost_pico > 0 AND
        (SELECT count(*) FROM ledger_entries l WHERE l.idempotency_key = 'charge:' || u.request_id
           AND l.cost_pico = u.cost_pico) <> 1""",
    # Every `charge:` entry, a leased request's at cost 0 (kind release) included.
    "charges_without_usage_record": """
        SELECT count(*) FROM ledger_entries l WHERE l.idempotency_key LIKE 'charge:%' AND NOT EXISTS
        (SELECT 1 FROM usage_records u WHERE u.request_id = substr(l.idempotency_key, 8))""",
    "reservations_without_usage_record": """
        SELECT count(*) FROM reservations r WHERE NOT EXISTS
        (SELECT 1 FROM usage_records u WHERE u.request_id = r.request_id)""",
    "leases_not_closed": "SELECT count(*) FROM credit_leases WHERE status <> 'closed'",
    "leases_still_holding": "SELECT count(*) FROM credit_leases WHERE held_micro <> 0",
    "closed_leases_settled_requests_not_as_returned": """
        SELECT count(*) FROM credit_leases
        WHERE status = 'closed' AND settled_requests IS DISTINCT FROM expected_requests""",
    # A lease's grant went back exactly once: charged to its requests, or released by a return or
    # its close (`lease-release:<id>:<held after>`, `lease-close:<id>`), or still held.
    "leases_where_grant_differs_from_charged_plus_released": """
        WITH released AS (
            SELECT CASE WHEN idempotency_key LIKE 'lease-close:%' THEN substr(idempotency_key, 13)
                        ELSE regexp_replace(substr(idempotency_key, 15), ':[0-9]+$', '') END AS lease_id,
                   -sum(held_delta_micro) AS micro
            FROM ledger_entries
            WHERE idempotency_key LIKE 'lease-close:%' OR idempotency_key LIKE 'lease-release:%'
            GROUP BY 1
        )
        SELECT count(*) FROM credit_leases k LEFT JOIN released r ON r.lease_id = k.id
        WHERE k.amount_micro <> k.settled_micro + coalesce(r.micro, 0) + k.held_micro""",
    # Per account: what its leases counted as settled equals the charge entries of the requests
    # its gateway covered (those without a reservation, not sent by a bench tool), in number and sum.
    "accounts_where_lease_settlements_differ_from_their_requests_charges": f"""
        WITH charged AS (
            SELECT l.account_id, count(*) AS n, -sum(l.amount_micro) AS micro FROM ledger_entries l
            WHERE l.idempotency_key LIKE 'charge:%'
              AND l.idempotency_key NOT LIKE 'charge:{TOOL_REQUEST_PREFIX}%'
              AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.request_id = substr(l.idempotency_key, 8))
            GROUP BY 1
        ), leased AS (
            SELECT account_id, sum(settled_requests) AS n, sum(settled_micro) AS micro
            FROM credit_leases GROUP BY 1
        )
        SELECT count(*) FROM charged c FULL JOIN leased k USING (account_id)
        WHERE coalesce(c.n, 0) <> coalesce(k.n, 0) OR coalesce(c.micro, 0) <> coalesce(k.micro, 0)""",
    "balances_not_equal_to_ledger_sum": """
        SELECT count(*) FROM balances b WHERE b.balance_micro <>
        (SELECT coalesce(sum(amount_micro), 0) FROM ledger_entries l WHERE l.account_id = b.account_id)""",
    "balances_with_money_still_held": "SELECT count(*) FROM balances WHERE held_micro <> 0",
    "balances_held_not_equal_to_ledger_holds": """
        SELECT count(*) FROM balances b WHERE b.held_micro <>
        (SELECT coalesce(sum(held_delta_micro), 0) FROM ledger_entries l WHERE l.account_id = b.account_id)""",
    "accounts_where_exact_costs_differ_from_deductions_plus_carry": """
        SELECT count(*) FROM balances b WHERE
        (SELECT coalesce(sum(cost_pico), 0) FROM ledger_entries l
          WHERE l.account_id = b.account_id AND l.kind = 'charge')
        <> (SELECT coalesce(-sum(amount_micro), 0) FROM ledger_entries l
          WHERE l.account_id = b.account_id AND l.kind = 'charge') * 1000000 + b.carry_pico""",
}


def still_to_do(counts: Mapping[str, Any]) -> list[str]:
    """What billing or usage has still to do, from a row of UNSETTLED (empty: all settled)."""
    return [f"{k} = {v}" for k, v in counts.items() if v not in (0, None)]


def _ms(seconds: Any) -> float:
    return round(float(seconds or 0) * 1000, 1)


def _per_second(n: int, span_s: Any) -> float | None:
    span = float(span_s or 0)
    return round(n / span, 1) if span else None


def request_window_figures(row: Mapping[str, Any]) -> dict[str, Any]:
    """Figures of a REQUEST_WINDOW row: every costed request charged once, at its recorded cost
    (a request at cost 0 has a charge entry only when a lease covered it)."""
    return {
        "requests": row["requests"],
        "costed_requests": row["costed"],
        "settled": row["settled"],
        "leases": row["leases"],
        "settle_rps": _per_second(row["settled"], row["span_s"]),
        "settle_lag_ms_p50": _ms(row["lag_p50_s"]),
        "settle_lag_ms_p99": _ms(row["lag_p99_s"]),
        "not_charged_exactly_once": row["not_charged_once"],
        "charge_differs_from_usage": row["charge_differs_from_usage"],
        "charged_exactly_once": row["requests"] > 0
        and row["costed"] > 0
        and row["not_charged_once"] == 0
        and row["charge_differs_from_usage"] == 0,
    }


def reservation_window_figures(row: Mapping[str, Any]) -> dict[str, Any]:
    """Figures of a RESERVATION_WINDOW row: every reservation settled and charged once."""
    return {
        "reservations": row["reservations"],
        "settled": row["settled"],
        "settle_rps": _per_second(row["settled"], row["span_s"]),
        "settle_lag_ms_p50": _ms(row["lag_p50_s"]),
        "settle_lag_ms_p99": _ms(row["lag_p99_s"]),
        "not_charged_exactly_once": row["not_charged_once"],
        "charge_differs_from_usage": row["charge_differs_from_usage"],
        "charged_exactly_once": row["reservations"] > 0
        and row["settled"] == row["reservations"]
        and row["not_charged_once"] == 0
        and row["charge_differs_from_usage"] == 0,
    }


def verdict(checks: Mapping[str, Any], notes: Mapping[str, Any]) -> dict[str, Any]:
    """The exactly-once check's result: every check (not the totals, not the notes) must be 0."""
    problems = [f"{k} = {v}" for k, v in checks.items() if k not in TOTALS and v not in (0, None)]
    return {**checks, **notes, "passed": not problems, "problems": problems}


class Db:
    def __init__(self, libpq_url: str):
        self.url = libpq_url

    def _run(self, coro_fn: Any, *args: Any) -> Any:
        async def go() -> Any:
            conn = await asyncpg.connect(self.url)
            try:
                return await coro_fn(conn, *args)
            finally:
                await conn.close()

        return asyncio.run(go())

    def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async def q(conn: asyncpg.Connection) -> list[dict[str, Any]]:
            return [dict(r) for r in await conn.fetch(sql, *args)]

        return self._run(q)  # type: ignore[no-any-return]

    def value(self, sql: str, *args: Any) -> Any:
        rows = self.fetch(sql, *args)
        return next(iter(rows[0].values())) if rows else None

    def wait_settled(self, timeout: float = 300) -> float:
        """Seconds until billing and usage have caught up: no reservation held, no credit lease open
        (a gateway returns an idle lease after ~2 s, billing closes it once its requests are
        settled), every costed request charged, every charge and reservation recorded by usage, and
        nothing held on any balance."""
        started = time.monotonic()
        left: list[str] = []
        while time.monotonic() - started < timeout:
            left = still_to_do(self.fetch(UNSETTLED)[0])
            if not left:
                return time.monotonic() - started
            time.sleep(0.5)
        raise TimeoutError(f"billing or usage not caught up {timeout:.0f} s after the load: {', '.join(left)}")

    def request_window_stats(self, account_ids: list[str], since: Any, until: Any) -> dict[str, Any]:
        """Settlement figures for the requests the stack received from `account_ids` in a window,
        from their usage records and charge entries, and their exactly-once check."""
        return request_window_figures(self.fetch(REQUEST_WINDOW, account_ids, since, until)[0])

    def reservation_window_stats(self, request_id_prefix: str) -> dict[str, Any]:
        """Settlement figures for the reservations whose request ids start with the prefix."""
        return reservation_window_figures(self.fetch(RESERVATION_WINDOW, request_id_prefix + "%")[0])

    def exactly_once(self) -> dict[str, Any]:
        """Over everything the run did: each request charged exactly once, every lease closed and
        equal to what its requests were charged, balances and holds consistent."""
        checks = {name: self.value(sql) for name, sql in {**TOTALS, **CHECKS}.items()}
        # Not a check: what the requests ended with (a refused request is recorded at cost 0).
        by_status = ", ".join(
            f"{r['status_code']} {r['error_type'] or ''}: {r['n']}".replace(" :", ":")
            for r in self.fetch(
                "SELECT status_code, error_type, count(*) AS n FROM usage_records GROUP BY 1, 2 ORDER BY 3 DESC"
            )
        )
        return verdict(checks, {"usage_records_by_status": by_status})
