"""Billing under load (section `billing`), on Postgres with fsync on: requests/s through the stack
(wrk; the gateway covers requests from credit leases, billing charges each against its lease) and
reserve-then-settle driven directly over NATS (`python -m bench billing-load`), each with many
accounts and with one hot account. Settled/s, settlement lag and the exactly-once check come from
the window's usage records and their charge entries (stack) or from its reservations (over NATS);
see bench.db_checks."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import REPO, log, report, tools
from bench.db_checks import Db
from bench.load import Target, run_wrk
from bench.settings import INSTANT_MODEL

if TYPE_CHECKING:
    from bench.gateway_run import GatewayRun


def billing(bench: GatewayRun, targets: dict[str, Target], db: Db, many_keys: Path) -> dict[str, Any]:
    cases = []
    c, d = bench.settings.billing_concurrency, bench.settings.billing_duration
    hot_account = bench.hot[0]
    many_ids = [a for a, _ in bench.many]
    for label, keys_file, account_ids in (
        (f"{len(many_ids)} accounts", many_keys, many_ids),
        ("1 hot account", bench.hot_keys, [hot_account]),
    ):
        db.wait_settled()
        since = dt.datetime.now(dt.UTC)
        raw, command = run_wrk(targets["stack"], c, d, keys_file=keys_file)
        until = dt.datetime.now(dt.UTC)
        bench.commands.append(command)
        db.wait_settled()
        stats = db.request_window_stats(account_ids, since, until)
        requests, ok, errors = report.wrk_counts(raw)
        case = {
            "path": "through the stack (HTTP → gateway, credit lease → router → Triton; usage event → charge)",
            "accounts_label": label,
            "concurrency": c,
            "rps": round(ok / (raw["duration_us"] / 1e6), 1),
            "reserve_ms": None,
            "client_ok": ok,
            "client_errors": errors,
            "latency_ms": report.summarize_wrk(raw),
            **stats,
            "command": command,
        }
        # wrk does not count requests still in flight when its time is up; the server did them.
        case["client_ok_le_requests"] = ok <= stats["requests"] <= ok + c + sum(errors.values())
        cases.append(case)
        log(
            f"billing via stack, {label}: {case['rps']} req/s, settled/s {stats['settle_rps']}, "
            f"{stats['leases']} leases, exactly once: {stats['charged_exactly_once']}"
        )
    for label, account_ids in ((f"{len(many_ids)} accounts", many_ids), ("1 hot account", [hot_account])):
        accounts_file = bench.keys_file(f"accounts-{len(account_ids)}.ids", account_ids)
        db.wait_settled()
        argv = tools.argv("billing-load", "--nats-url", bench.testbed.nats_url)
        argv += ["--accounts-file", str(accounts_file), "--label", str(len(account_ids))]
        argv += ["--concurrency", str(c), "--duration", str(d), "--model", INSTANT_MODEL]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=d + 120, cwd=REPO)
        if done.returncode != 0:
            log(f"billing_load failed: {done.stderr[-1500:]}")
            continue
        raw = json.loads(done.stdout)
        command = tools.shown(argv)
        bench.commands.append(command)
        db.wait_settled()
        stats = db.reservation_window_stats(raw["request_id_prefix"])
        case = {
            "path": "billing alone over NATS (reserve, then usage event → settle)",
            "accounts_label": label,
            "concurrency": c,
            "rps": round(raw["reserve_rps"], 1),
            "reserve_ms": report.summarize(raw["reserve_ms"]),
            "operations": raw["operations"],
            "refused": raw["refused"],
            **stats,
            "command": command,
        }
        case["charged_exactly_once"] = bool(
            stats["charged_exactly_once"] and stats["reservations"] == raw["operations"]
        )
        cases.append(case)
        log(
            f"billing alone, {label}: {case['rps']} reserves/s, settled/s {stats['settle_rps']}, "
            f"exactly once: {case['charged_exactly_once']}"
        )
    return {
        "cases": cases,
        "postgres": {"fsync": bench.settings.pg_fsync, "version": bench.testbed.postgres_version},
        "note": "settled/s: through the stack, charged requests ÷ (last charge − first request received); "
        "over NATS, settled reservations ÷ (last settlement − first reservation). Settle lag: from the "
        "end of the request (stack) or from the reservation (over NATS) to the charge",
    }
