"""What the database says after load: waiting until billing and usage have caught up, settlement
figures for a window of reservations, and the exactly-once check over a whole run (every request
charged once, balances and holds equal to their ledger entries)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg


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

    def wait_settled(self, timeout: float = 180) -> float:
        """Seconds until no reservation is held any more and usage has recorded every reserved
        request (billing and usage consume the usage events independently, at their own pace)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not self.value(
                """SELECT count(*) FROM reservations r WHERE r.status = 'held'
                   OR NOT EXISTS (SELECT 1 FROM usage_records u WHERE u.request_id = r.request_id)"""
            ):
                return time.monotonic() - started
            time.sleep(0.25)
        raise TimeoutError("reservations still held, or requests not yet recorded by usage, after the run")

    def window_stats(self, where: str, *args: Any) -> dict[str, Any]:
        """Settlement figures for the reservations matching `where`, and their exactly-once check."""
        row = self.fetch(
            f"""
            SELECT count(*) AS reservations,
                   count(*) FILTER (WHERE r.status = 'settled') AS settled,
                   extract(epoch FROM max(r.closed_at) - min(r.created_at)) AS span_s,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.closed_at - r.created_at))
                       AS lag_p50_s,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM r.closed_at - r.created_at))
                       AS lag_p99_s,
                   count(*) FILTER (WHERE (SELECT count(*) FROM ledger_entries l
                                           WHERE l.idempotency_key = 'charge:' || r.request_id) <> 1)
                       AS not_charged_once,
                   count(*) FILTER (WHERE NOT EXISTS (
                        SELECT 1 FROM usage_records u JOIN ledger_entries l
                          ON l.idempotency_key = 'charge:' || u.request_id AND l.cost_pico = u.cost_pico
                        WHERE u.request_id = r.request_id)) AS charge_differs_from_usage
            FROM reservations r WHERE {where}
            """,
            *args,
        )[0]
        span = float(row["span_s"] or 0)
        return {
            "reservations": row["reservations"],
            "settled": row["settled"],
            "settle_rps": round(row["settled"] / span, 1) if span else None,
            "settle_lag_ms_p50": round(float(row["lag_p50_s"] or 0) * 1000, 1),
            "settle_lag_ms_p99": round(float(row["lag_p99_s"] or 0) * 1000, 1),
            "not_charged_exactly_once": row["not_charged_once"],
            "charge_differs_from_usage": row["charge_differs_from_usage"],
            "charged_exactly_once": row["reservations"] > 0
            and row["settled"] == row["reservations"]
            and row["not_charged_once"] == 0
            and row["charge_differs_from_usage"] == 0,
        }

    def exactly_once(self) -> dict[str, Any]:
        """Over everything the run did: each request charged exactly once, balances consistent."""
        checks = {
            "usage_records": self.value("SELECT count(*) FROM usage_records"),
            "charges": self.value("SELECT count(*) FROM ledger_entries WHERE kind = 'charge'"),
            "reservations": self.value("SELECT count(*) FROM reservations"),
            "reservations_not_settled": self.value("SELECT count(*) FROM reservations WHERE status <> 'settled'"),
            "duplicate_ledger_keys": self.value(
                "SELECT count(*) FROM (SELECT idempotency_key FROM ledger_entries GROUP BY 1 HAVING count(*) > 1) d"
            ),
            "charged_usage_without_exactly_one_matching_charge": self.value(
                """SELECT count(*) FROM usage_records u WHERE u.cost_pico > 0 AND
                   (SELECT count(*) FROM ledger_entries l WHERE l.idempotency_key = 'charge:' || u.request_id
                      AND l.cost_pico = u.cost_pico) <> 1"""
            ),
            "charges_without_usage_record": self.value(
                """SELECT count(*) FROM ledger_entries l WHERE l.kind = 'charge' AND NOT EXISTS
                   (SELECT 1 FROM usage_records u WHERE 'charge:' || u.request_id = l.idempotency_key)"""
            ),
            "reservations_without_usage_record": self.value(
                """SELECT count(*) FROM reservations r WHERE NOT EXISTS
                   (SELECT 1 FROM usage_records u WHERE u.request_id = r.request_id)"""
            ),
            "balances_not_equal_to_ledger_sum": self.value(
                """SELECT count(*) FROM balances b WHERE b.balance_micro <>
                   (SELECT coalesce(sum(amount_micro), 0) FROM ledger_entries l WHERE l.account_id = b.account_id)"""
            ),
            "balances_with_money_still_held": self.value("SELECT count(*) FROM balances WHERE held_micro <> 0"),
            "accounts_where_exact_costs_differ_from_deductions_plus_carry": self.value(
                """SELECT count(*) FROM balances b WHERE
                   (SELECT coalesce(sum(cost_pico), 0) FROM ledger_entries l
                     WHERE l.account_id = b.account_id AND l.kind = 'charge')
                   <> (SELECT coalesce(-sum(amount_micro), 0) FROM ledger_entries l
                     WHERE l.account_id = b.account_id AND l.kind = 'charge') * 1000000 + b.carry_pico"""
            ),
        }
        if self.value(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'ledger_entries' AND column_name = 'held_delta_micro'"
        ):
            checks["balances_held_not_equal_to_ledger_holds"] = self.value(
                """SELECT count(*) FROM balances b WHERE b.held_micro <>
                   (SELECT coalesce(sum(held_delta_micro), 0) FROM ledger_entries l
                     WHERE l.account_id = b.account_id)"""
            )
        problems = [
            f"{k} = {v}"
            for k, v in checks.items()
            if k not in ("usage_records", "charges", "reservations") and v not in (0, None)
        ]
        # Not a check: what the requests ended with (a refused request is recorded at cost 0).
        checks["usage_records_by_status"] = ", ".join(
            f"{r['status_code']} {r['error_type'] or ''}: {r['n']}".replace(" :", ":")
            for r in self.fetch(
                "SELECT status_code, error_type, count(*) AS n FROM usage_records GROUP BY 1, 2 ORDER BY 3 DESC"
            )
        )
        checks["passed"] = not problems
        checks["problems"] = problems
        return checks
