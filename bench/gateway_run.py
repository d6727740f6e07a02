"""Lexora benchmarks: gateway overhead and throughput side by side with LiteLLM, on one machine.

    make bench                 # full run (bench/README.md: ~25 minutes on 2 cores)
    BENCH_QUICK=1 make bench   # the same measurements, shorter and fewer levels (< 5 minutes)

Starts everything on 127.0.0.1: a private Postgres, nats-server, tritonserver serving model-repo/
(instant-echo and SmolLM2), the five Lexora services, a minimal OpenAI shim in front of Triton and
LiteLLM's proxy pointed at that shim. Then measures, with the load generator in its own process:

- overhead: the instant-echo model called directly (Triton's HTTP generate / generate_stream), via
  the shim, via LiteLLM (-> shim) and via the whole Lexora stack (auth, billing on Postgres, usage),
  non-streaming (wrk) and streaming (bench/loadgen.py, time to first token), over a sweep of client
  concurrencies, with CPU per request attributed to each process; then every target again at one
  fixed request rate (open loop, bench/loadgen.py --rate): 90% of LiteLLM's peak;
- billing under load: reserve-then-settle through the stack and directly over NATS, many accounts
  and one hot account, then a check that every request was charged exactly once;
- memory: resident memory of each process before and after a long run;
- end to end: tokens/s of SmolLM2 through the stack vs directly against Triton;
- optionally (BENCH_PROFILE=1, on by default in the full run) py-spy profiles of the services.

Writes bench/results/latest.json and the results section of docs/benchmarks.md.
Settings (environment): BENCH_QUICK=1, BENCH_LEVELS=1,4,16, BENCH_DURATION=s, BENCH_WORKERS=1,2,
BENCH_PROFILE=0|1, BENCH_PG_FSYNC=on|off, BENCH_LITELLM_DB=1 (try LiteLLM's database mode first),
BENCH_KEEP_STATE=1 (keep logs under bench/.state/ even on success), BENCH_SECTIONS=sweep,rate,
rate_stream,hops,memory,billing,e2e,profile (a subset, e.g. while working on one part; results of a partial
run are written to bench/results/partial.json and leave latest.json and the docs alone).

    python bench/run.py --render [bench/results/latest.json]   # re-derive headline and docs, no measuring
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench import BENCH, REPO, RESULTS, pg, procstat, report, tools
from bench import pyspy_summary as profiles
from lexora_contracts import subjects
from lexora_contracts.messages import (
    Balance,
    CreateAccountReply,
    CreateAccountRequest,
    GrantRequest,
)
from lexora_contracts.registry import Endpoint, ModelRecord, Pricing
from lexora_dev import stack
from lexora_dev.catalog import LOCAL_CHAT_MODEL, local_catalog
from lexora_dev.processes import ManagedProcess, free_port, http_ok, wait_until
from lexora_dev.triton_server import triton_command, tritonserver_binary
from lexora_runtime.bus import call, connect

DOC = REPO / "docs" / "benchmarks.md"
DOC_BEGIN, DOC_END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"
LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_PIN = "1.106.2"
LITELLM_MASTER_KEY = "sk-bench-master"

INSTANT_MODEL = "bench/instant-echo"  # the registry id the stack serves instant-echo under
INSTANT_TRITON = "instant-echo"
# $1 per 1M tokens, input and output: every request costs something, so billing is exercised.
INSTANT_PRICE_MICRO_PER_MTOK = 1_000_000
ACCOUNT_CREDIT_MICRO = 1_000_000_000  # $1,000 each: no benchmark request is ever refused for credit
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]
E2E_MESSAGES = [{"role": "user", "content": "Write a very long and detailed story about a dragon and a knight."}]
FIRST_TOKEN = "Hello"  # instant-echo's first token: its first appearance in a body is the first token


SECTIONS = ("sweep", "rate", "rate_stream", "hops", "memory", "billing", "e2e", "profile")
# The open-loop sections send requests at this share of LiteLLM's peak rate in their mode (rate:
# non-streaming, rate_stream: streaming): the load where LiteLLM saturates. Some runs it is already
# more than LiteLLM sustains at a fixed rate (its queue grows), which the report then shows.
OPEN_LOOP_SHARE = 0.9
OPEN_LOOP_MAX_IN_FLIGHT = 64


@dataclass
class Profile:
    quick: bool
    levels: list[int]
    duration: int
    warmup: int
    workers: list[int]
    max_tokens: int
    billing_accounts: int
    billing_concurrency: int
    billing_duration: int
    memory_duration: int
    memory_concurrency: int
    e2e_max_tokens: int
    e2e_reps: int
    e2e_budget_s: int
    hops_n: int
    profile: bool
    profile_duration: int
    pg_fsync: bool
    litellm_db: bool
    sections: list[str]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Profile:
        quick = env.get("BENCH_QUICK", "") not in ("", "0")

        def ints(name: str, default: str) -> list[int]:
            return [int(x) for x in env.get(name, default).split(",") if x.strip()]

        return cls(
            quick=quick,
            levels=ints("BENCH_LEVELS", "1,4,16" if quick else "1,2,4,8,16,32,64"),
            duration=int(env.get("BENCH_DURATION", "4" if quick else "12")),
            warmup=1 if quick else 3,
            workers=ints("BENCH_WORKERS", "1" if quick else "1,2"),
            max_tokens=16,
            billing_accounts=50 if quick else 500,
            billing_concurrency=16,
            billing_duration=4 if quick else 12,
            memory_duration=int(env.get("BENCH_MEMORY_DURATION", "15" if quick else "120")),
            memory_concurrency=16,
            e2e_max_tokens=64 if quick else 128,
            e2e_reps=3 if quick else 5,
            e2e_budget_s=45 if quick else 240,
            hops_n=150 if quick else 1000,
            profile=env.get("BENCH_PROFILE", "0" if quick else "1") not in ("", "0"),
            profile_duration=8 if quick else 15,
            pg_fsync=env.get("BENCH_PG_FSYNC", "on") != "off",
            litellm_db=env.get("BENCH_LITELLM_DB", "0") not in ("", "0"),
            sections=env.get("BENCH_SECTIONS", ",".join(SECTIONS)).split(","),
        )


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- load generators ------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    urls: dict[str, str]  # mode -> URL
    bodies: dict[str, Path]  # mode -> body file
    keys_file: Path | None = None


def run_wrk(target: Target, concurrency: int, duration: int, keys_file: Path | None = None) -> tuple[dict, str]:
    keys = keys_file or target.keys_file
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout", "10s"]
    argv += ["-s", str(tools.WRK_SCRIPT), target.urls["nonstream"]]
    env = {**os.environ, "WRK_BODY_FILE": str(target.bodies["nonstream"]), "WRK_KEYS_FILE": str(keys or "")}
    command = f"WRK_BODY_FILE={target.bodies['nonstream']} WRK_KEYS_FILE={keys or ''} "
    command += shlex.join(argv)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 60)
    if "WRK_JSON" not in done.stdout:
        raise RuntimeError(f"wrk failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return json.loads(done.stdout.split("WRK_JSON", 1)[1].strip().splitlines()[0]), command


def run_loadgen(
    target: Target,
    mode: str,
    concurrency: int,
    duration: float = 0,
    requests: int = 0,
    keys_file: Path | None = None,
    rate: float = 0.0,
) -> tuple[dict, str]:
    """bench/loadgen.py: closed loop with `concurrency` clients, or with `rate` an open loop at that
    many requests per second with at most `concurrency` in flight."""
    keys = keys_file or target.keys_file
    argv = tools.argv("loadgen", "--url", target.urls[mode])
    argv += ["--body-file", str(target.bodies[mode]), "--concurrency", str(concurrency)]
    argv += ["--rate", f"{rate:g}"] if rate else []
    argv += ["--requests", str(requests)] if requests else ["--duration", str(duration)]
    if mode == "stream":
        argv += ["--marker", FIRST_TOKEN]
    if keys:
        argv += ["--keys-file", str(keys)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=(duration or 600) + 120, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed: {done.stderr[-2000:]}")
    command = tools.shown(argv)
    return json.loads(done.stdout), command


# ---- the platform ---------------------------------------------------------------------------------
@dataclass
class Platform:
    prof: Profile
    state: Path
    exits: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    procs: dict[str, ManagedProcess] = field(default_factory=dict)
    pg_root: Path | None = None
    database_url: str = ""
    libpq_url: str = ""
    nats_url: str = ""
    nats_monitor: int = 0
    triton_http: int = 0
    triton_grpc: str = ""
    gateway_port: int = 0
    shim_port: int = 0
    litellm_port: int = 0
    litellm_key: str = LITELLM_MASTER_KEY
    litellm_mode: str = "no database"
    litellm_db_probe: str = "not tried (BENCH_LITELLM_DB=1 tries it)"
    workers: int = 1
    config: stack.ServiceConfig | None = None

    # -- start-up --
    def start(self, workers: int) -> None:
        self.workers = workers
        logs = self.state / "logs"
        # Triton loads its models while the database and NATS come up.
        self.triton_http, grpc_port, metrics_port = free_port(), free_port(), free_port()
        argv, env = triton_command(stack.MODEL_REPO, self.state / "triton", self.triton_http, grpc_port, metrics_port)
        self.procs["triton"] = ManagedProcess("tritonserver", argv, logs / "triton.log", env=env).start()
        self.triton_grpc = f"127.0.0.1:{grpc_port}"

        self.pg_root = self.state / "pg"
        self.database_url, self.libpq_url = self.exits.enter_context(
            pg.private_postgres(self.pg_root, fsync=self.prof.pg_fsync)
        )
        nats_port, self.nats_monitor = free_port(), free_port()
        self.procs["nats"] = stack.start_nats(self.state, nats_port, self.nats_monitor)
        self.nats_url = f"nats://127.0.0.1:{nats_port}"
        stack.prepare_database(self.database_url)
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{self.triton_http}/v2/health/ready"),
            300,
            "tritonserver",
            self.procs["triton"],
        )
        stack.publish_catalog(self.nats_url, [*local_catalog(self.triton_endpoint()), self.instant_record()])

        self.gateway_port = free_port()
        self.config = stack.ServiceConfig(
            nats_url=self.nats_url,
            database_url=self.database_url,
            state_dir=self.state,
            gateway_port=self.gateway_port,
            log_level="INFO",
            extra_env={"LEXORA_WORKERS": str(workers)},
        )
        for service in stack.SERVICES:
            self.procs[service] = stack.start_service(service, self.config)
        stack.wait_for_gateway(self.gateway_port, self.procs["gateway"])

        self.shim_port = free_port()
        shim_argv = tools.argv("shim", "--port", str(self.shim_port))
        shim_argv += ["--triton-http", f"127.0.0.1:{self.triton_http}", "--model", INSTANT_TRITON]
        self.procs["shim"] = ManagedProcess("shim", shim_argv, logs / "shim.log", cwd=REPO).start()
        wait_until(lambda: _port_answers(self.shim_port, "/v1/models"), 30, "shim", self.procs["shim"])
        self.start_litellm(workers)

    def instant_record(self) -> ModelRecord:
        price = INSTANT_PRICE_MICRO_PER_MTOK
        return ModelRecord(
            id=INSTANT_MODEL,
            owned_by="lexora-bench",
            triton_model=INSTANT_TRITON,
            context_length=8192,
            pricing=Pricing(input_micro_per_mtok=price, output_micro_per_mtok=price),
            capabilities=["chat"],
            created=1730000000,
            endpoints=[self.triton_endpoint()],
        )

    def triton_endpoint(self) -> Endpoint:
        return Endpoint(name="local", grpc_address=self.triton_grpc, http_address=f"127.0.0.1:{self.triton_http}")

    def _litellm_config(self, database_url: str | None) -> Path:
        lines = [
            "model_list:",
            "  - model_name: instant-echo",
            "    litellm_params:",
            "      model: openai/instant-echo",
            f"      api_base: http://127.0.0.1:{self.shim_port}/v1",
            "      api_key: none",
            "general_settings:",
            f"  master_key: {LITELLM_MASTER_KEY}",
        ]
        if database_url:
            lines.append(f"  database_url: {database_url}")
        path = self.state / ("litellm-db.yaml" if database_url else "litellm.yaml")
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_litellm(self, workers: int) -> None:
        binary = LITELLM_VENV / "bin" / "litellm"
        if not binary.exists():
            raise FileNotFoundError(f"{binary} missing: run bench/setup.sh (make bench does)")
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
        wants_db = self.litellm_mode.startswith("database") or (
            self.prof.litellm_db and self.litellm_db_probe.startswith("not tried")
        )
        if wants_db and self._try_litellm_database(binary, env, workers):
            return
        self.litellm_port = free_port()
        argv = [str(binary), "--config", str(self._litellm_config(None)), "--host", "127.0.0.1"]
        argv += ["--port", str(self.litellm_port), "--num_workers", str(workers)]
        self.procs["litellm"] = ManagedProcess(
            "litellm", argv, self.state / "logs" / f"litellm-w{workers}.log", env=env, cwd=self.state
        ).start()
        wait_until(
            lambda: _port_answers(self.litellm_port, "/health/liveliness"), 180, "litellm", self.procs["litellm"]
        )
        self.litellm_mode = "no database (master key, no spend tracking)"

    def _try_litellm_database(self, binary: Path, env: dict[str, str], workers: int) -> bool:
        """LiteLLM with a virtual key and spend tracking on Postgres, if Prisma can start offline."""
        db_url = self.libpq_url.rsplit("/", 1)[0] + "/litellm"
        asyncio.run(_create_database(self.libpq_url, "litellm"))
        self.litellm_port = free_port()
        argv = [str(binary), "--config", str(self._litellm_config(db_url)), "--host", "127.0.0.1"]
        argv += ["--port", str(self.litellm_port), "--num_workers", str(workers)]
        proc = ManagedProcess(
            "litellm", argv, self.state / "logs" / "litellm-db.log", env={**env, "DATABASE_URL": db_url}, cwd=self.state
        ).start()
        try:
            wait_until(lambda: _port_answers(self.litellm_port, "/health/liveliness"), 120, "litellm (database)", proc)
            key = _litellm_virtual_key(self.litellm_port)
        except Exception as exc:
            tail = proc.log_tail(8).replace("\n", " ")
            self.litellm_db_probe = f"failed: {type(exc).__name__}: {tail[-600:]}"
            proc.stop()
            log(f"LiteLLM's database mode did not start; running it without a database ({self.litellm_db_probe})")
            return False
        self.procs["litellm"] = proc
        self.litellm_key = key
        self.litellm_mode = "database (virtual key, spend tracking on Postgres)"
        self.litellm_db_probe = "started"
        return True

    def restart_front(self, workers: int) -> None:
        """Gateway and LiteLLM again, with another number of worker processes."""
        assert self.config is not None
        for name in ("gateway", "litellm"):
            self.procs.pop(name).stop()
        self.workers = workers
        self.gateway_port = free_port()
        self.config = stack.ServiceConfig(
            **{
                **self.config.__dict__,
                "gateway_port": self.gateway_port,
                "extra_env": {"LEXORA_WORKERS": str(workers)},
            }
        )
        self.procs["gateway"] = stack.start_service("gateway", self.config, f"gateway-w{workers}")
        stack.wait_for_gateway(self.gateway_port, self.procs["gateway"])
        self.start_litellm(workers)

    def roots(self) -> dict[str, int]:
        out = {name: p.proc.pid for name, p in self.procs.items() if p.proc is not None and p.alive}
        postmaster = pg.postmaster_pid(self.pg_root) if self.pg_root else None
        if postmaster:
            out["postgres"] = postmaster
        return out

    def memory(self) -> dict[str, dict[str, float]]:
        procs = procstat.snapshot()
        return {
            name: {"rss": round(procstat.rss_mib(pid, procs), 1), "pss": round(procstat.pss_mib(pid, procs), 1)}
            for name, pid in self.roots().items()
        }

    def nats_counts(self) -> tuple[int, int]:
        """Messages into and out of nats-server since it started (its monitoring endpoint)."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.nats_monitor, timeout=5)
            conn.request("GET", "/varz")
            varz = json.loads(conn.getresponse().read())
            return int(varz["in_msgs"]), int(varz["out_msgs"])
        except (OSError, ValueError, KeyError):
            return 0, 0

    def stop(self) -> None:
        """Everything at once (each stop waits for its process), then the database."""
        import threading

        def stop_one(process: ManagedProcess) -> None:
            with contextlib.suppress(Exception):
                process.stop(timeout=10)

        threads = [threading.Thread(target=stop_one, args=(p,)) for p in self.procs.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.procs.clear()
        self.exits.close()


def _port_answers(port: int, path: str) -> bool:
    return http_ok(f"http://127.0.0.1:{port}{path}")


async def _create_database(libpq_url: str, name: str) -> None:
    conn = await asyncpg.connect(libpq_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.DuplicateDatabaseError:
        pass
    finally:
        await conn.close()


def _litellm_virtual_key(port: int) -> str:
    body = json.dumps({"models": ["instant-echo"], "max_budget": 1000}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST",
        "/key/generate",
        body,
        {"Authorization": f"Bearer {LITELLM_MASTER_KEY}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    data = json.loads(response.read())
    if response.status != 200:
        raise RuntimeError(f"/key/generate answered {response.status}: {data}")
    return str(data["key"])


# ---- accounts -------------------------------------------------------------------------------------
async def create_accounts(nats_url: str, count: int, prefix: str) -> list[tuple[str, str]]:
    nc = await connect(nats_url, "bench")
    limit = asyncio.Semaphore(8)

    async def one(i: int) -> tuple[str, str]:
        async with limit:
            reply = await call(
                nc,
                subjects.AUTH_ACCOUNT_CREATE,
                CreateAccountRequest(plan="enterprise", name=f"{prefix}-{i}"),
                CreateAccountReply,
                timeout=30,
            )
            await call(
                nc,
                subjects.BILLING_CREDITS_GRANT,
                GrantRequest(
                    account_id=reply.account_id,
                    amount_micro=ACCOUNT_CREDIT_MICRO,
                    idempotency_key=f"bench:{reply.account_id}",
                    actor="bench",
                    reason="benchmark credit",
                ),
                Balance,
                timeout=30,
            )
            return reply.account_id, reply.api_key

    try:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        await nc.drain()


# ---- the database checks --------------------------------------------------------------------------
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


# ---- the benchmark --------------------------------------------------------------------------------
class Bench:
    def __init__(self, prof: Profile, state: Path):
        self.prof = prof
        self.state = state
        self.platform = Platform(prof, state)
        self.runs: list[dict[str, Any]] = []
        self.commands: list[str] = []
        self.bodies = state / "bodies"
        self.bodies.mkdir(parents=True, exist_ok=True)

    # -- files --
    def _body(self, name: str, payload: dict[str, Any]) -> Path:
        path = self.bodies / name
        path.write_text(json.dumps(payload, separators=(",", ":")))
        return path

    def _keys(self, name: str, keys: list[str]) -> Path:
        path = self.bodies / name
        path.write_text("\n".join(keys) + "\n")
        return path

    def targets(self) -> dict[str, Target]:
        p = self.platform
        n = self.prof.max_tokens
        triton_body = {
            "text_input": json.dumps(MESSAGES),
            "apply_chat_template": True,
            "max_tokens": n,
            "temperature": 0.7,
            "top_p": 1.0,
        }

        def openai(model: str, stream: bool) -> dict[str, Any]:
            return {"model": model, "messages": MESSAGES, "max_tokens": n, "temperature": 0.7, "stream": stream}

        triton = f"http://127.0.0.1:{p.triton_http}/v2/models/{INSTANT_TRITON}"
        return {
            "direct": Target(
                "direct",
                {"nonstream": f"{triton}/generate", "stream": f"{triton}/generate_stream"},
                {
                    "nonstream": self._body("direct.json", {**triton_body, "stream": False}),
                    "stream": self._body("direct-stream.json", {**triton_body, "stream": True}),
                },
            ),
            "shim": Target(
                "shim",
                dict.fromkeys(("nonstream", "stream"), f"http://127.0.0.1:{p.shim_port}/v1/chat/completions"),
                {
                    "nonstream": self._body("openai.json", openai(INSTANT_TRITON, False)),
                    "stream": self._body("openai-stream.json", openai(INSTANT_TRITON, True)),
                },
            ),
            "litellm": Target(
                "litellm",
                dict.fromkeys(("nonstream", "stream"), f"http://127.0.0.1:{p.litellm_port}/v1/chat/completions"),
                {
                    "nonstream": self._body("openai.json", openai(INSTANT_TRITON, False)),
                    "stream": self._body("openai-stream.json", openai(INSTANT_TRITON, True)),
                },
                self._keys("litellm.keys", [p.litellm_key]),
            ),
            "stack": Target(
                "stack",
                dict.fromkeys(("nonstream", "stream"), f"http://127.0.0.1:{p.gateway_port}/v1/chat/completions"),
                {
                    "nonstream": self._body("stack.json", openai(INSTANT_MODEL, False)),
                    "stream": self._body("stack-stream.json", openai(INSTANT_MODEL, True)),
                },
                self.hot_keys,
            ),
        }

    # -- one measured point --
    def measure(self, target: Target, mode: str, concurrency: int, **extra: Any) -> dict[str, Any]:
        meter = procstat.CpuMeter(self.platform.roots())
        nats_before = self.platform.nats_counts()
        meter.start()
        if mode == "nonstream":
            raw, command = run_wrk(target, concurrency, self.prof.duration)
            requests, ok, errors = report.wrk_counts(raw)
            duration = raw["duration_us"] / 1e6
            run: dict[str, Any] = {
                "tool": "wrk",
                "latency_ms": report.summarize_wrk(raw),
                "requests": requests,
                "ok": ok,
                "errors": errors,
            }
        else:
            raw, command = run_loadgen(target, mode, concurrency, duration=self.prof.duration)
            duration = raw["duration_s"]
            ok = raw["ok"]
            errors = dict(raw["errors"])
            errors.update({f"status {k}": v for k, v in raw["statuses"].items() if not k.startswith("2")})
            run = {
                "tool": "loadgen",
                "latency_ms": report.summarize(raw["latency_ms"]),
                "ttft_ms": report.summarize(raw["ttft_ms"]),
                "requests": raw["requests"],
                "ok": ok,
                "errors": errors,
                "client_cpu_s": raw["client_cpu_s"],
            }
        cpu = meter.stop()
        nats_after = self.platform.nats_counts()
        if target.name == "stack" and ok:
            run["nats_msgs_in_per_request"] = round((nats_after[0] - nats_before[0]) / ok, 1)
            run["nats_msgs_out_per_request"] = round((nats_after[1] - nats_before[1]) / ok, 1)
        run.update(
            {
                "target": target.name,
                "mode": mode,
                "concurrency": concurrency,
                "workers": self.platform.workers,
                "duration_s": round(duration, 3),
                "rps": round(ok / duration, 1) if duration else 0.0,
                "cpu_ms_per_request": {k: round(v * 1000 / ok, 3) for k, v in cpu.items() if ok and k != "foreign"},
                "foreign_cpu_cores": round(cpu["foreign"] / duration, 2) if duration else None,
                "client_cpu_cores": round(cpu["client"] / duration, 2) if duration else None,
                "command": command,
                **extra,
            }
        )
        self.commands.append(command)
        self.runs.append(run)
        lat = run.get("ttft_ms") if mode == "stream" else run["latency_ms"]
        log(
            f"{target.name:8s} {mode:9s} c={concurrency:<3d} {run['rps']:8.1f} req/s  "
            f"p50 {lat.get('p50', float('nan')):7.2f} ms  p99 {lat.get('p99', float('nan')):7.2f} ms  "
            f"errors {sum(errors.values())}  other load {run['foreign_cpu_cores']} cores"
        )
        if errors and sum(errors.values()) > max(ok // 100, 2):
            log(f"  WARNING: {target.name} answered {errors}")
        return run

    def warm(self, targets: dict[str, Target], names: list[str]) -> None:
        for name in names:
            for mode in ("nonstream", "stream"):
                try:
                    if mode == "nonstream":
                        run_wrk(targets[name], 4, self.prof.warmup)
                    else:
                        run_loadgen(targets[name], mode, 4, duration=self.prof.warmup)
                except Exception as exc:
                    log(f"warm-up of {name} {mode} failed: {exc}")

    def sweep(self, targets: dict[str, Target], names: list[str]) -> None:
        """Every level, every target, interleaved (rotating the order) so slow drifts in the machine's
        load spread evenly over the targets instead of landing on one."""
        for mode in ("nonstream", "stream"):
            for i, concurrency in enumerate(self.prof.levels):
                order = names[i % len(names) :] + names[: i % len(names)]
                for name in order:
                    try:
                        self.measure(targets[name], mode, concurrency)
                    except Exception as exc:
                        log(f"{name} {mode} c={concurrency} failed: {exc}")

    def open_loop(self, targets: dict[str, Target], names: list[str], mode: str) -> dict[str, Any]:
        """Every target at the same fixed rate (open loop): a share of LiteLLM's peak from the sweep in
        that mode. Latency (and, streaming, time to first token) counts from when each request was due
        if it had to wait, so queueing behind a slow answer is not hidden by the client waiting
        (coordinated omission)."""
        workers = self.platform.workers
        litellm_peak = report.overhead(self.runs, workers, mode)["peak_rps"].get("litellm", {}).get("rps")
        if not litellm_peak:
            return {"error": f"no LiteLLM {mode} peak rate from the sweep (the rate sections need the sweep)"}
        rate = round(litellm_peak * OPEN_LOOP_SHARE, 1)
        duration = max(2 * self.prof.duration, 8)
        metric = report.metric_of(mode)
        runs = []
        for name in names:
            meter = procstat.CpuMeter(self.platform.roots())
            meter.start()
            raw, command = run_loadgen(targets[name], mode, OPEN_LOOP_MAX_IN_FLIGHT, duration=duration, rate=rate)
            cpu = meter.stop()
            self.commands.append(command)
            errors = dict(raw["errors"])
            errors.update({f"status {k}": v for k, v in raw["statuses"].items() if not k.startswith("2")})
            run = {
                "target": name,
                "mode": mode,
                "rate": rate,
                "requests": raw["requests"],
                "ok": raw["ok"],
                "errors": errors,
                "rps": round(raw["rps"], 1),
                "latency_ms": report.summarize(raw["latency_ms"]),
                **({"ttft_ms": report.summarize(raw["ttft_ms"])} if mode == "stream" else {}),
                "client_late_ms": report.summarize(raw["late_ms"]),
                "waited_for_a_connection": raw["waited_for_a_connection"],
                "foreign_cpu_cores": round(cpu["foreign"] / raw["duration_s"], 2) if raw["duration_s"] else None,
                "command": command,
            }
            runs.append(run)
            lat = run[metric]
            log(
                f"{name:8s} open loop {mode:9s} {rate:7.1f} req/s: {metric} p50 {lat.get('p50', float('nan')):7.2f} ms"
                f"  p99 {lat.get('p99', float('nan')):7.2f} ms  errors {sum(errors.values())}"
            )
        return {
            "mode": mode,
            "rate": rate,
            "share_of_litellm_peak": OPEN_LOOP_SHARE,
            "litellm_peak_rps": litellm_peak,
            "max_in_flight": OPEN_LOOP_MAX_IN_FLIGHT,
            "duration_s": duration,
            "runs": runs,
            "added_ms": report.open_loop_added(runs, metric),
        }

    # -- billing --
    def billing(self, targets: dict[str, Target], db: Db, many_keys: Path, accounts: list[str]) -> dict[str, Any]:
        cases = []
        c, d = self.prof.billing_concurrency, self.prof.billing_duration
        hot_account = self.hot[0]
        many_ids = [a for a, _ in self.many]
        for label, keys_file, account_ids in (
            (f"{len(many_ids)} accounts", many_keys, many_ids),
            ("1 hot account", self.hot_keys, [hot_account]),
        ):
            db.wait_settled()
            since = dt.datetime.now(dt.UTC)
            raw, command = run_wrk(targets["stack"], c, d, keys_file=keys_file)
            until = dt.datetime.now(dt.UTC)
            self.commands.append(command)
            db.wait_settled()
            stats = db.window_stats(
                "r.account_id = ANY($1::text[]) AND r.created_at >= $2 AND r.created_at <= $3",
                account_ids,
                since,
                until,
            )
            requests, ok, errors = report.wrk_counts(raw)
            case = {
                "path": "through the stack (HTTP → gateway → billing → router → Triton)",
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
            case["client_ok_le_reservations"] = ok <= stats["reservations"] <= ok + c + sum(errors.values())
            cases.append(case)
            log(
                f"billing via stack, {label}: {case['rps']} req/s, settled/s {stats['settle_rps']}, "
                f"exactly once: {stats['charged_exactly_once']}"
            )
        for label, account_ids in ((f"{len(many_ids)} accounts", many_ids), ("1 hot account", [hot_account])):
            accounts_file = self._keys(f"accounts-{len(account_ids)}.ids", account_ids)
            db.wait_settled()
            argv = tools.argv("billing-load", "--nats-url", self.platform.nats_url)
            argv += ["--accounts-file", str(accounts_file), "--label", str(len(account_ids))]
            argv += ["--concurrency", str(c), "--duration", str(d), "--model", INSTANT_MODEL]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=d + 120, cwd=REPO)
            if done.returncode != 0:
                log(f"billing_load failed: {done.stderr[-1500:]}")
                continue
            raw = json.loads(done.stdout)
            command = tools.shown(argv)
            self.commands.append(command)
            db.wait_settled()
            stats = db.window_stats("r.request_id LIKE $1", raw["request_id_prefix"] + "%")
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
            "postgres": {"fsync": self.prof.pg_fsync, "version": pg.version()},
            "note": "settled/s = settled reservations ÷ (last settlement − first reservation) in the window",
        }

    # -- memory --
    def memory(self, targets: dict[str, Target], db: Db, start: dict[str, dict[str, float]]) -> dict[str, Any]:
        db.wait_settled()
        time.sleep(1.0)
        before = self.platform.memory()
        raw, command = run_loadgen(
            targets["stack"], "nonstream", self.prof.memory_concurrency, duration=self.prof.memory_duration
        )
        self.commands.append(command)
        db.wait_settled()
        time.sleep(1.0)
        after = self.platform.memory()
        n = raw["ok"]
        processes = {}
        for name, b in before.items():
            a = after.get(name, b)
            processes[name] = {
                "start_rss_mib": start.get(name, {}).get("rss"),
                "before_rss_mib": b["rss"],
                "after_rss_mib": a["rss"],
                "rss_growth_mib_per_10k": report.per_10k(b["rss"], a["rss"], n),
                "before_pss_mib": b["pss"],
                "after_pss_mib": a["pss"],
                "pss_growth_mib_per_10k": report.per_10k(b["pss"], a["pss"], n),
            }
        log(
            f"memory: {n} requests at {raw['rps']:.0f} req/s; RSS growth per 10k: "
            + ", ".join(f"{k} {v['rss_growth_mib_per_10k']}" for k, v in processes.items())
        )
        return {
            "requests": n,
            "errors": raw["errors"],
            "rps": round(raw["rps"], 1),
            "processes": processes,
            "command": command,
        }

    # -- end to end on the real model --
    def e2e(self, api_key: str) -> dict[str, Any]:
        """SmolLM2 tokens/s through the stack and directly, sequential requests in alternating order.

        llama.cpp runs one thread per core, so anything else on the machine slows it down: the
        figure per path is its best request (interference only ever slows a request down), with
        the median beside it.
        """
        p, m = self.platform, self.prof.e2e_max_tokens
        direct_body = json.dumps(
            {
                "text_input": json.dumps(E2E_MESSAGES),
                "apply_chat_template": True,
                "max_tokens": m,
                "stream": False,
                "temperature": 0.0,
                "top_p": 1.0,
            }
        )
        stack_body = json.dumps(
            {"model": LOCAL_CHAT_MODEL, "messages": E2E_MESSAGES, "max_tokens": m, "temperature": 0, "top_p": 1.0}
        )

        deadline = time.monotonic() + self.prof.e2e_budget_s

        def left() -> float:
            return deadline - time.monotonic()

        def direct() -> tuple[int, float]:
            path = "/v2/models/smollm2-135m-instruct/generate"
            out, seconds = _post(p.triton_http, path, direct_body, {}, timeout=left())
            return int(out["num_output_tokens"]), seconds

        def via_stack() -> tuple[int, float]:
            headers = {"Authorization": f"Bearer {api_key}"}
            out, seconds = _post(p.gateway_port, "/v1/chat/completions", stack_body, headers, timeout=left())
            return int(out["usage"]["completion_tokens"]), seconds

        direct()
        via_stack()  # warm both paths (and the model's caches)
        rates: dict[str, list[float]] = {"direct": [], "stack": []}
        tokens_seen: dict[str, set[int]] = {"direct": set(), "stack": set()}
        meter = procstat.CpuMeter(p.roots())
        meter.start()
        started = time.monotonic()
        for rep in range(self.prof.e2e_reps):
            if rep and left() < 0.3 * self.prof.e2e_budget_s:
                break  # a very busy machine: what was measured stands, with its count
            order = [("direct", direct), ("stack", via_stack)]
            for name, fn in order if rep % 2 == 0 else reversed(order):
                tokens, seconds = fn()
                rates[name].append(tokens / seconds)
                tokens_seen[name].add(tokens)
        cpu = meter.stop()
        out: dict[str, Any] = {}
        for name, values in rates.items():
            out[name] = {
                "requests": len(values),
                "completion_tokens": sorted(tokens_seen[name]),
                "tokens_per_s_best": round(max(values), 2),
                "tokens_per_s_median": round(report.percentile(values, 50), 2),
                "tokens_per_s_each": [round(v, 2) for v in values],
            }
        out["stack_vs_direct_tokens_per_s"] = report.ratio(
            out["stack"]["tokens_per_s_best"], out["direct"]["tokens_per_s_best"]
        )
        out["stack_vs_direct_tokens_per_s_median"] = report.ratio(
            out["stack"]["tokens_per_s_median"], out["direct"]["tokens_per_s_median"]
        )
        out["foreign_cpu_cores"] = round(cpu["foreign"] / (time.monotonic() - started), 2)
        out["max_tokens"] = m
        out["note"] = "sequential non-streaming requests, temperature 0, alternating order; best and median"
        log(
            f"e2e SmolLM2: direct {out['direct']['tokens_per_s_best']} tok/s, "
            f"stack {out['stack']['tokens_per_s_best']} tok/s → {out['stack_vs_direct_tokens_per_s']} "
            f"(medians → {out['stack_vs_direct_tokens_per_s_median']}; other load {out['foreign_cpu_cores']} cores)"
        )
        return out

    # -- the hops, one at a time --
    def hops(self) -> dict[str, Any]:
        p = self.platform
        argv = tools.argv("hops", "--nats-url", p.nats_url, "--triton-grpc", p.triton_grpc)
        argv += ["--triton-http", str(p.triton_http), "--gateway-port", str(p.gateway_port)]
        argv += ["--account", self.hot[0], "--api-key", self.hot[1], "--model", INSTANT_MODEL]
        argv += ["--max-tokens", str(self.prof.max_tokens), "-n", str(self.prof.hops_n)]
        meter = procstat.CpuMeter(p.roots())
        meter.start()
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO)
        cpu = meter.stop()
        if done.returncode != 0:
            log(f"hops failed: {done.stderr[-1500:]}")
            return {"error": done.stderr[-1500:]}
        out = json.loads(done.stdout)
        out["foreign_cpu_cores"] = round(cpu["foreign"] / (time.monotonic() - started), 2)
        self.commands.append(tools.shown(argv).replace(self.hot[1], "$KEY"))
        log(
            "hops p50 ms: "
            + ", ".join(f"{k} {v['p50']:.2f}" for k, v in out.items() if isinstance(v, dict) and "p50" in v)
        )
        return out

    # -- profiles --
    def profile(self, targets: dict[str, Target]) -> dict[str, Any]:
        """py-spy on each service while the stack serves non-streaming load at 16 clients."""
        out_dir = RESULTS / "profiles"
        out_dir.mkdir(parents=True, exist_ok=True)
        spy = Path(sys.executable).parent / "py-spy"
        if not spy.exists():
            return {"skipped": "py-spy is not installed in .venv (bench/setup.sh installs it)"}
        d = self.prof.profile_duration
        roots = self.platform.roots()
        spies = {}
        for name in ("gateway", "router", "billing", "usage", "auth"):
            raw = out_dir / f"{name}.collapsed"
            argv = [str(spy), "record", "--pid", str(roots[name]), "--duration", str(d), "--rate", "250"]
            argv += ["--format", "raw", "--nonblocking", "--subprocesses", "-o", str(raw)]
            spies[name] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), raw)
            self.commands.append(shlex.join(["py-spy", *argv[1:]]).replace(str(REPO) + "/", ""))
        time.sleep(0.5)
        run = self.measure(targets["stack"], "nonstream", 16, profiled=True)
        self.runs.remove(run)  # sampling slows the services: not a benchmark figure
        # CPU per request of each service without the profiler, from the sweep's run at 16 clients.
        unprofiled = report.find_run(
            self.runs, target="stack", mode="nonstream", concurrency=16, workers=self.platform.workers
        )
        cpu = (unprofiled or run).get("cpu_ms_per_request", {})
        summaries: dict[str, Any] = {"load": {"rps": run["rps"], "requests": run["ok"], "concurrency": 16}}
        for name, (proc, raw) in spies.items():
            proc.wait(timeout=d + 60)
            if not raw.exists():
                summaries[name] = {"error": proc.stderr.read().decode()[-500:] if proc.stderr else "no output"}
                continue
            summary = profiles.with_cpu(profiles.summarize_collapsed(raw.read_text()), cpu.get(name))
            summaries[name] = summary
            (out_dir / f"{name}.txt").write_text(profiles.render_text(name, summary))
        log(f"profiles written to {out_dir}")
        return summaries

    # -- everything --
    def run(self) -> dict[str, Any]:
        prof, p = self.prof, self.platform
        started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.git_at_start = git_state()  # the code the services are started with
        t0 = time.monotonic()
        log(f"starting the platform ({'quick' if prof.quick else 'full'} run, state in {self.state})")
        p.start(prof.workers[0])
        log(f"platform up in {time.monotonic() - t0:.0f}s; LiteLLM: {p.litellm_mode}")
        start_memory = p.memory()
        self.hot = asyncio.run(create_accounts(p.nats_url, 1, "bench-hot"))[0]
        self.hot_keys = self._keys("hot.keys", [self.hot[1]])
        self.many = asyncio.run(create_accounts(p.nats_url, prof.billing_accounts, "bench-many"))
        many_keys = self._keys("many.keys", [k for _, k in self.many])
        db = Db(p.libpq_url)
        targets = self.targets()
        names = ["direct", "shim", "litellm", "stack"]
        self.warm(targets, names)
        # The many-account keys are verified (and cached by the gateway) before billing is measured.
        run_loadgen(targets["stack"], "nonstream", 8, requests=len(self.many) + 8, keys_file=many_keys)

        results: dict[str, Any] = {"config": {**prof.__dict__}, "runs": self.runs}
        for i, workers in enumerate(prof.workers):
            if i:
                log(f"restarting gateway and LiteLLM with {workers} workers")
                p.restart_front(workers)
                targets = self.targets()
                self.warm(targets, ["litellm", "stack"])
            if "sweep" in prof.sections:
                self.sweep(targets, names if i == 0 else ["litellm", "stack"])
            if i == 0:
                sections = {
                    "rate": lambda t=targets: self.open_loop(t, names, "nonstream"),
                    "rate_stream": lambda t=targets: self.open_loop(t, names, "stream"),
                    "hops": self.hops,
                    "memory": lambda t=targets: self.memory(t, db, start_memory),
                    "billing": lambda t=targets: self.billing(t, db, many_keys, [a for a, _ in self.many]),
                    "e2e": lambda: self.e2e(self.hot[1]),
                    "profile": lambda t=targets: self.profile(t),
                }
                for name, section in sections.items():
                    if name not in prof.sections or (name == "profile" and not prof.profile):
                        continue
                    try:
                        db.wait_settled()  # a settlement backlog would run beside the next section
                        results[name] = section()
                    except Exception as exc:  # one section failing does not lose the others
                        log(f"{name} failed: {type(exc).__name__}: {exc}")
                        results[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        db.wait_settled()
        results["exactly_once"] = db.exactly_once()
        log(f"exactly-once check: {'passed' if results['exactly_once']['passed'] else 'FAILED'}")
        results["meta"] = self.meta(started_at, time.monotonic() - t0)
        return results

    def meta(self, started_at: str, elapsed: float) -> dict[str, Any]:
        p = self.platform
        return {
            "started_at": started_at,
            "elapsed_s": round(elapsed, 1),
            "machine": {
                "cores": os.cpu_count(),
                "cpu_model": procstat.cpu_model(),
                "mem_gib": procstat.mem_total_gib(),
                "kernel": platform.release(),
            },
            "versions": versions(),
            "litellm_mode": p.litellm_mode,
            "litellm_db_probe": p.litellm_db_probe,
            "git": {"at_start": self.git_at_start, "at_end": git_state()},
            "design": {
                "direct": "wrk/loadgen → Triton HTTP generate (/generate_stream) on instant-echo",
                "shim": "wrk/loadgen → python -m bench shim (aiohttp, 1 process) → Triton HTTP generate",
                "litellm": "wrk/loadgen → LiteLLM proxy (uvicorn, N workers) → shim → Triton",
                "stack": "wrk/loadgen → gateway (N workers) → [auth cache] → billing reserve (Postgres) → "
                "router → Triton gRPC stream; usage event → JetStream → billing settle + usage record (Postgres)",
            },
            "commands": ["BENCH_QUICK=1 make bench" if self.prof.quick else "make bench"],
            "state_dir_note": "$STATE is the run's bench/.state/<time> directory (request bodies, key files, logs)",
            "commands_sample": _sample_commands(self.commands, self.state),
        }


def _post(
    port: int, path: str, body: str, headers: dict[str, str], timeout: float = 300
) -> tuple[dict[str, Any], float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=max(timeout, 1))
    started = time.perf_counter()
    conn.request("POST", path, body, {"Content-Type": "application/json", **headers})
    response = conn.getresponse()
    data = response.read()
    seconds = time.perf_counter() - started
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"{path} answered {response.status}: {data[:500]!r}")
    return json.loads(data), seconds


def _sample_commands(commands: list[str], state: Path) -> list[str]:
    """One command of each kind, paths relative to the repository (the rest differ only in the
    client concurrency and the ports)."""
    import re

    seen, out = set(), []
    for command in commands:
        command = command.replace(str(state) + "/", "$STATE/").replace(str(BENCH) + "/", "bench/")
        command = command.replace(str(REPO) + "/", "")
        key = re.sub(r"-c\d+|--concurrency \d+|127\.0\.0\.1:\d+|--pid \d+", "", command)
        if key not in seen:
            seen.add(key)
            out.append(command)
    return out


def versions() -> dict[str, str]:
    def run(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        except Exception as exc:
            return f"unknown ({type(exc).__name__})"

    from importlib.metadata import PackageNotFoundError, version

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    litellm_py = LITELLM_VENV / "bin" / "python"
    litellm_version = run([str(litellm_py), "-c", "from importlib.metadata import version; print(version('litellm'))"])
    return {
        "litellm": litellm_version,
        "python": platform.python_version(),
        "lexora": pkg("lexora"),
        "tritonserver (nvidia-pytriton)": f"{pkg('nvidia-pytriton')} ({tritonserver_binary().parent.parent.name})",
        "nats-server": run([stack.nats_server_binary(), "--version"]),
        "postgres": pg.version(),
        "wrk": run(["wrk", "--version"]).split(" [")[0],
        "uvicorn": pkg("uvicorn"),
        "fastapi": pkg("fastapi"),
        "nats-py": pkg("nats-py"),
        "tritonclient": pkg("tritonclient"),
        "llama-cpp-python": pkg("llama_cpp_python"),
    }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    dirty = [line[3:] for line in git("status", "--porcelain").splitlines() if line[3:].startswith("services/")]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_service_files": dirty}


def write_outputs(results: dict[str, Any]) -> Path:
    """latest.json (+ quick.json or full.json) and the results section of docs/benchmarks.md; a run
    of only some sections writes partial.json and partial.md instead."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    results["headline"] = report.headline(results)
    ordered = {**results["headline"], **{k: v for k, v in results.items() if k != "headline"}}
    ordered["headline"] = results["headline"]
    data = json.dumps(ordered, indent=1, default=str) + "\n"
    markdown = report.render_markdown(results)
    if set(results["config"]["sections"]) != set(SECTIONS):
        (RESULTS / "partial.json").write_text(data)
        (RESULTS / "partial.md").write_text(markdown)
        return RESULTS / "partial.json"
    (RESULTS / "latest.json").write_text(data)
    (RESULTS / ("quick.json" if results["config"]["quick"] else "full.json")).write_text(data)
    if DOC.exists() and DOC_BEGIN in DOC.read_text():
        text = DOC.read_text()
        before, rest = text.split(DOC_BEGIN, 1)
        after = rest.split(DOC_END, 1)[1] if DOC_END in rest else ""
        DOC.write_text(f"{before}{DOC_BEGIN}\n{markdown}{DOC_END}{after}")
    else:
        (RESULTS / "latest.md").write_text(markdown)
    return RESULTS / "latest.json"


@contextlib.contextmanager
def state_dir(keep: bool) -> Iterator[Path]:
    root = BENCH / ".state" / time.strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    ok = False
    try:
        yield root
        ok = True
    finally:
        if ok and not keep:
            shutil.rmtree(root, ignore_errors=True)
        elif not ok:
            print(f"logs kept under {root}/logs", file=sys.stderr)


def rerender(path: Path | None) -> int:
    """`python -m bench render [results.json]`: derive the headline and the docs' results section again
    from a saved run (latest.json by default) with the current bench/report.py, measuring nothing."""
    path = path or RESULTS / "latest.json"
    saved = json.loads(path.read_text())
    headline_keys = set(saved.get("headline") or {}) | {"headline"}
    written = write_outputs({k: v for k, v in saved.items() if k not in headline_keys})
    log(f"rendered {path} again: wrote {written}" + ("" if written.name == "partial.json" else f" and {DOC}"))
    return 0


def main(overrides: Mapping[str, str]) -> int:
    """The gateway run; `overrides` are BENCH_* settings given on the command line."""
    env = {**os.environ, **overrides}
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk (make bench does)", file=sys.stderr)
        return 2
    prof = Profile.from_env(env)
    with state_dir(keep=env.get("BENCH_KEEP_STATE", "") not in ("", "0")) as state:
        bench = Bench(prof, state)
        try:
            results = bench.run()
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            bench.platform.stop()
        written = write_outputs(results)
    head = results["headline"]
    log(
        f"done in {results['meta']['elapsed_s']:.0f}s: {head['rps_ratio_vs_litellm']}x LiteLLM's req/s, "
        f"added p50 {head['p50_added_ms']} ms / p99 {head['p99_added_ms']} ms at "
        f"{head['added_ms_measured_at_concurrency']} clients, TTFT added p50 {head['ttft_added_ms_p50']} ms, "
        f"stack/direct tokens/s {head['stack_vs_direct_tokens_per_s']}"
    )
    log(f"wrote {written}" + ("" if written.name == "partial.json" else f" and {DOC}"))
    return 0
