"""Billing alone, before and after a change, side by side: reserve and settle over NATS on Postgres.

    .venv/bin/python -m bench billing --baseline-ref 373a8a0        # ~4 minutes
    .venv/bin/python -m bench billing --rounds 1 --duration 4        # the working tree only

One Postgres cluster (fsync and synchronous commit on, as in production) for the whole run. Each
measurement starts a fresh nats-server, a fresh database and one billing process, either the
working tree's or the baseline's (`git archive <ref>` of lexora_billing and lexora_runtime, put
first on PYTHONPATH; contracts come from the working tree). Variants alternate A B B A … so a drift
in the machine's load (a shared box) spreads over both; ratios are the result.

Two measurements per account set (many accounts, one hot account):

- **mixed**: `--concurrency` clients each reserve (`billing.v1.credits.reserve`) and then publish
  the request's usage event to JetStream, as gateway and router do (`python -m bench billing-load`), for
  `--duration` seconds, while billing settles. Reserves/s and their latency from the clients;
  settled/s (settled ÷ last settlement − first reservation) and the settlement lag
  (closed_at − created_at) from the database; CPU of billing and Postgres per request.
- **backlog**: `--backlog` requests reserved, billing stopped, their events published, billing
  started again: how fast it settles a backlog (settled ÷ (last − first settlement)), nothing else
  running, and Postgres' CPU per settled event.

Every run is checked: each reservation settled, and charged exactly once.
Results: bench/results/billing_bench.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import nats

from bench import REPO, RESULTS, pg, procstat, report, tools
from lexora_billing.client import BillingClient
from lexora_contracts import subjects
from lexora_contracts.messages import ReserveRequest, UsageEvent
from lexora_db.engine import migrate
from lexora_dev import stack
from lexora_dev.processes import ManagedProcess, free_port
from lexora_runtime.bus import publish_usage_event

CREDIT_MICRO = 10**9
HOLD_MICRO = 10
COST_PICO = 2_800_000
MODEL = "bench/instant-echo"


def log(message: str) -> None:
    print(f"[billing-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def extract_baseline(ref: str, into: Path) -> Path:
    """lexora_billing and lexora_runtime as they were at `ref`; returns the directory for PYTHONPATH."""
    archive = subprocess.run(
        ["git", "archive", ref, "services/lexora_billing", "services/lexora_runtime"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "services"


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self._cm = pg.private_postgres(root / "pg", fsync=True)
        postgres = self._cm.__enter__()
        self.url, self.libpq_url, self.version = postgres.url, postgres.libpq_url, postgres.version
        self.pid = postgres.postmaster_pid

    def fresh_database(self) -> tuple[str, str]:
        name = f"bb_{uuid.uuid4().hex[:10]}"

        async def create() -> None:
            conn = await asyncpg.connect(self.libpq_url)
            try:
                await conn.execute(f"CREATE DATABASE {name}")
            finally:
                await conn.close()

        asyncio.run(create())
        url = self.url.rsplit("/", 1)[0] + f"/{name}"
        migrate(url)
        return url, self.libpq_url.rsplit("/", 1)[0] + f"/{name}"

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


class Billing:
    """nats-server + one billing process on a fresh database."""

    def __init__(self, cluster: Cluster, root: Path, pythonpath: str | None):
        self.root = root
        self.db_url, self.libpq_url = cluster.fresh_database()
        port = free_port()
        self.nats = stack.start_nats(root, port)
        self.nats_url = f"nats://127.0.0.1:{port}"
        env = {"LEXORA_LOG_LEVEL": "WARNING"}
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        self.config = stack.ServiceConfig(
            nats_url=self.nats_url, database_url=self.db_url, state_dir=root, gateway_port=0, extra_env=env
        )
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        self.process = stack.start_service("billing", self.config)
        assert self.process is not None
        stack.wait_for_service(self.nats_url, subjects.BILLING_HEALTH, self.process, timeout=60)

    def stop_billing(self) -> None:
        if self.process is not None and self.process.proc is not None:
            self.process.proc.send_signal(signal.SIGTERM)
            self.process.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        self.nats.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None and self.process.proc is not None
        return self.process.proc.pid


def fetch(libpq_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(libpq_url)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def wait_settled(libpq_url: str, prefix: str, expected: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [row] = fetch(
            libpq_url,
            "SELECT count(*) FILTER (WHERE status = 'settled') AS n FROM reservations WHERE request_id LIKE $1",
            prefix + "%",
        )
        if row["n"] >= expected:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{prefix}: not all {expected} settled after {timeout}s")


def window(libpq_url: str, prefix: str, span_from: str) -> dict[str, Any]:
    """Settlement figures and the exactly-once check for the reservations of one run."""
    [row] = fetch(
        libpq_url,
        f"""
        SELECT count(*) AS reservations,
               count(*) FILTER (WHERE r.status = 'settled') AS settled,
               extract(epoch FROM max(r.closed_at) - min(r.{span_from})) AS span_s,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.closed_at - r.created_at)) AS lag50,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM r.closed_at - r.created_at)) AS lag99,
               count(*) FILTER (WHERE (SELECT count(*) FROM ledger_entries l
                                       WHERE l.idempotency_key = 'charge:' || r.request_id) <> 1) AS not_once
        FROM reservations r WHERE r.request_id LIKE $1
        """,
        prefix + "%",
    )
    [consistency] = fetch(
        libpq_url,
        """
        SELECT count(*) AS inconsistent FROM balances b WHERE (b.balance_micro, b.held_micro) <>
          (SELECT coalesce(sum(amount_micro), 0), coalesce(sum(held_delta_micro), 0)
           FROM ledger_entries l WHERE l.account_id = b.account_id)
        """,
    )
    span = float(row["span_s"] or 0)
    return {
        "reservations": row["reservations"],
        "settled": row["settled"],
        "settle_rps": round(row["settled"] / span, 1) if span else None,
        "settle_lag_ms_p50": round(float(row["lag50"] or 0) * 1000, 1),
        "settle_lag_ms_p99": round(float(row["lag99"] or 0) * 1000, 1),
        "charged_exactly_once": row["reservations"] > 0
        and row["settled"] == row["reservations"]
        and row["not_once"] == 0
        and consistency["inconsistent"] == 0,
    }


async def grant(nats_url: str, accounts: list[str]) -> None:
    nc = await nats.connect(nats_url)
    billing = BillingClient(nc)
    try:
        for account_id in accounts:
            await billing.grant(account_id, CREDIT_MICRO, idempotency_key=account_id, actor="b", reason="b", timeout=30)
    finally:
        await nc.drain()


def event(request_id: str, account_id: str) -> UsageEvent:
    return UsageEvent(
        request_id=request_id,
        account_id=account_id,
        key_id="bench",
        model=MODEL,
        status_code=200,
        prompt_tokens=12,
        completion_tokens=16,
        cost_pico=COST_PICO,
        reserved_micro=HOLD_MICRO,
        finish_reason="length",
        received_at=time.time(),
        latency_ms=1,
    )


async def reserve_many(nats_url: str, prefix: str, accounts: list[str], count: int) -> list[UsageEvent]:
    nc = await nats.connect(nats_url)
    billing = BillingClient(nc)
    limit = asyncio.Semaphore(16)

    async def one(n: int) -> UsageEvent:
        request_id, account_id = f"{prefix}{n}", accounts[n % len(accounts)]
        async with limit:
            request = ReserveRequest(request_id=request_id, account_id=account_id, amount_micro=HOLD_MICRO, ttl_s=3600)
            await billing.reserve(request, timeout=30)
        return event(request_id, account_id)

    try:
        return list(await asyncio.gather(*(one(n) for n in range(count))))
    finally:
        await nc.drain()


async def publish_all(nats_url: str, events: list[UsageEvent]) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    limit = asyncio.Semaphore(64)

    async def one(e: UsageEvent) -> None:
        async with limit:
            await publish_usage_event(js, e)

    try:
        await asyncio.gather(*(one(e) for e in events))
    finally:
        await nc.drain()


def measure(
    cluster: Cluster, variant: str, pythonpath: str | None, accounts_n: int, args: argparse.Namespace, root: Path
) -> dict[str, Any]:
    billing = Billing(cluster, root / f"{variant}-{uuid.uuid4().hex[:6]}", pythonpath)
    try:
        billing.start()
        accounts = [f"acct_{uuid.uuid4().hex[:24]}" for _ in range(accounts_n)]
        asyncio.run(grant(billing.nats_url, accounts))
        accounts_file = billing.root / "accounts.ids"
        accounts_file.write_text("\n".join(accounts) + "\n")

        def load(label: str, duration: float) -> tuple[dict[str, Any], dict[str, float]]:
            meter = procstat.CpuMeter({"billing": billing.pid, "postgres": cluster.pid or 0})
            meter.start()
            argv = tools.argv("billing-load", "--nats-url", billing.nats_url)
            argv += ["--accounts-file", str(accounts_file), "--label", label, "--concurrency", str(args.concurrency)]
            argv += ["--duration", str(duration), "--model", MODEL, "--reserve-micro", str(HOLD_MICRO)]
            argv += ["--cost-pico", str(COST_PICO)]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120, check=True, cwd=REPO)
            raw = json.loads(done.stdout)
            wait_settled(billing.libpq_url, raw["request_id_prefix"], raw["operations"])
            return raw, meter.stop()

        load("warmup", 1.0)
        raw, cpu = load("mixed", args.duration)
        mixed = window(billing.libpq_url, raw["request_id_prefix"], "created_at")
        ops = raw["operations"]
        mixed.update(
            {
                "reserve_rps": round(raw["reserve_rps"], 1),
                "reserve_ms": report.summarize(raw["reserve_ms"]),
                "operations": ops,
                "refused": raw["refused"],
                "cpu_ms_per_request": {k: round(v * 1000 / ops, 3) for k, v in cpu.items() if k != "machine_busy"},
            }
        )
        mixed["charged_exactly_once"] = mixed["charged_exactly_once"] and mixed["reservations"] == ops

        prefix = f"backlog-{uuid.uuid4().hex[:6]}-"
        events = asyncio.run(reserve_many(billing.nats_url, prefix, accounts, args.backlog))
        billing.stop_billing()
        asyncio.run(publish_all(billing.nats_url, events))
        # Postgres only: billing's own start-up would dominate its CPU over so short a drain.
        meter = procstat.CpuMeter({"postgres": cluster.pid or 0})
        meter.start()
        billing.start()
        wait_settled(billing.libpq_url, prefix, len(events))
        cpu = meter.stop()
        backlog = window(billing.libpq_url, prefix, "closed_at")
        backlog["postgres_cpu_ms_per_event"] = round(cpu["postgres"] * 1000 / len(events), 3)
        return {"variant": variant, "accounts": accounts_n, "mixed": mixed, "backlog": backlog}
    finally:
        billing.stop()


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(results: list[dict[str, Any]], variants: list[str]) -> dict[str, Any]:
    figures = {
        "reserve_rps": lambda r: r["mixed"]["reserve_rps"],
        "reserve_p50_ms": lambda r: r["mixed"]["reserve_ms"].get("p50"),
        "reserve_p99_ms": lambda r: r["mixed"]["reserve_ms"].get("p99"),
        "mixed_settle_rps": lambda r: r["mixed"]["settle_rps"],
        "mixed_lag_p99_ms": lambda r: r["mixed"]["settle_lag_ms_p99"],
        "mixed_cpu_ms_billing": lambda r: r["mixed"]["cpu_ms_per_request"]["billing"],
        "mixed_cpu_ms_postgres": lambda r: r["mixed"]["cpu_ms_per_request"]["postgres"],
        "backlog_settle_rps": lambda r: r["backlog"]["settle_rps"],
        "backlog_cpu_ms_postgres": lambda r: r["backlog"]["postgres_cpu_ms_per_event"],
    }
    out: dict[str, Any] = {}
    for accounts in sorted({r["accounts"] for r in results}, reverse=True):
        table: dict[str, Any] = {}
        for name, get in figures.items():
            row = {
                v: median([get(r) for r in results if r["variant"] == v and r["accounts"] == accounts])
                for v in variants
            }
            if len(variants) == 2 and row[variants[0]]:
                row["ratio"] = round(row[variants[1]] / row[variants[0]], 2) if row[variants[1]] is not None else None
            table[name] = row
        table["charged_exactly_once"] = all(
            r["mixed"]["charged_exactly_once"] and r["backlog"]["charged_exactly_once"]
            for r in results
            if r["accounts"] == accounts
        )
        out[f"{accounts} accounts" if accounts > 1 else "1 hot account"] = table
    return out


def markdown(summary: dict[str, Any], variants: list[str]) -> str:
    lines = []
    for case, table in summary.items():
        lines.append(f"\n{case} (medians; exactly once: {'yes' if table['charged_exactly_once'] else 'NO'})\n")
        header = ["figure", *variants] + (["after ÷ before"] if len(variants) == 2 else [])
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for name, row in table.items():
            if name == "charged_exactly_once":
                continue
            cells = [name] + [report._fmt(row.get(v)) for v in variants]
            if len(variants) == 2:
                cells.append(report._fmt(row.get("ratio"), 2))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench billing", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline-ref", help="git ref of the code to compare with (omit: working tree only)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--output", type=Path, default=RESULTS / "billing_bench.json")
    parser.add_argument("--report", type=Path, help="print the tables of an earlier run's JSON and exit")
    args = parser.parse_args(argv)
    if args.report:
        earlier = json.loads(args.report.read_text())
        variants = list(dict.fromkeys(r["variant"] for r in earlier["runs"]))
        print(markdown(summarize(earlier["runs"], variants), variants))
        return

    root = Path(tempfile.mkdtemp(prefix="lexora-billing-bench-"))
    root.chmod(0o755)  # Postgres runs as its own user when we are root
    variants = ["working tree"]
    paths: dict[str, str | None] = {"working tree": None}
    if args.baseline_ref:
        variants = [f"before ({args.baseline_ref})", "after (working tree)"]
        paths = {variants[0]: str(extract_baseline(args.baseline_ref, root / "baseline")), variants[1]: None}
    cluster = Cluster(root)
    results = []
    try:
        for round_no in range(args.rounds):
            for accounts in (args.accounts, 1):
                order = variants if (round_no + (accounts == 1)) % 2 == 0 else variants[::-1]
                for variant in order:
                    result = measure(cluster, variant, paths[variant], accounts, args, root)
                    m, b = result["mixed"], result["backlog"]
                    log(
                        f"{variant:24s} {accounts:4d} accounts: reserve {m['reserve_rps']}/s "
                        f"p50 {m['reserve_ms'].get('p50')} ms, settled {m['settle_rps']}/s lag p99 "
                        f"{m['settle_lag_ms_p99']} ms; backlog {b['settle_rps']}/s; "
                        f"exactly once {m['charged_exactly_once'] and b['charged_exactly_once']}"
                    )
                    results.append(result)
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)
    summary = summarize(results, variants)
    output = {
        "tool": "billing_bench",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "postgres": {"fsync": True, "version": cluster.version},
        "machine": {"cores": procstat.os.cpu_count(), "cpu_model": procstat.cpu_model()},
        "summary": summary,
        "runs": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=2) + "\n")
    print(markdown(summary, variants))
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
