"""The gateway run: gateway overhead and throughput side by side with LiteLLM and Portkey, on one machine.

    make bench                 # python -m bench: the full run (~25 minutes on 2 cores)
    BENCH_QUICK=1 make bench   # python -m bench --quick: shorter, fewer levels (< 5 minutes)

Starts the testbed (bench.testbed: Postgres, nats-server, Triton, the five Lexora services, the
OpenAI shim, LiteLLM, Portkey's AI Gateway) on 127.0.0.1, creates the accounts, then runs the sections (bench.sections)
in this order, each with its load generator in its own process:

- sweep (concurrency_sweep): the instant-echo model called directly (Triton's HTTP generate /
  generate_stream), via the shim, via LiteLLM (-> shim), via Portkey (-> shim) and via the whole
  Lexora stack,
  non-streaming (wrk) and streaming (time to first token), over a sweep of client concurrencies,
  with CPU per request attributed to each process; repeated with each BENCH_WORKERS count;
- rate, rate_stream (open_loop): every target again at one fixed request rate, 90% of LiteLLM's peak;
- hops: each hop of the request path alone, at one client;
- memory: resident memory of each process before and after a long run;
- billing (billing_under_load): requests charged against credit leases through the stack, and
  reserve-then-settle directly over NATS, many accounts and one hot account;
- e2e (end_to_end): tokens/s of SmolLM2 through the stack vs directly against Triton;
- profile (profiling; BENCH_PROFILE=1, on in the full run): py-spy profiles of the services;

and finally checks that every request was charged exactly once (bench.db_checks). Results: see
bench.outputs. Settings: bench.settings (BENCH_* variables, or the options of `python -m bench`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bench import BENCH, log, outputs, procstat, run_info
from bench.accounts import create_accounts
from bench.db_checks import Db
from bench.load import Target, run_loadgen, run_wrk
from bench.sections import (
    billing_under_load,
    concurrency_sweep,
    end_to_end,
    hops,
    memory,
    open_loop,
    profiling,
)
from bench.settings import INSTANT_MODEL, INSTANT_TRITON, MESSAGES, Settings
from bench.testbed import Testbed


class GatewayRun:
    """One gateway run: the testbed, the accounts, and what the sections have measured so far
    (`runs`: every closed-loop point; `commands`: every command run, for the record)."""

    def __init__(self, settings: Settings, state: Path):
        self.settings = settings
        self.state = state
        self.testbed = Testbed(settings, state)
        self.runs: list[dict[str, Any]] = []
        self.commands: list[str] = []
        self.bodies = state / "bodies"
        self.bodies.mkdir(parents=True, exist_ok=True)
        self.hot: tuple[str, str] = ("", "")  # (account id, API key) of the one hot account
        self.hot_keys: Path | None = None
        self.many: list[tuple[str, str]] = []  # the many accounts of the billing section
        self.git_at_start: dict[str, Any] = {}  # the code the services are started with

    # -- files --
    def body_file(self, name: str, payload: dict[str, Any]) -> Path:
        path = self.bodies / name
        path.write_text(json.dumps(payload, separators=(",", ":")))
        return path

    def keys_file(self, name: str, keys: list[str]) -> Path:
        path = self.bodies / name
        path.write_text("\n".join(keys) + "\n")
        return path

    def targets(self) -> dict[str, Target]:
        p = self.testbed
        n = self.settings.max_tokens
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
                    "nonstream": self.body_file("direct.json", {**triton_body, "stream": False}),
                    "stream": self.body_file("direct-stream.json", {**triton_body, "stream": True}),
                },
            ),
            "shim": Target(
                "shim",
                dict.fromkeys(("nonstream", "stream"), f"http://127.0.0.1:{p.shim_port}/v1/chat/completions"),
                {
                    "nonstream": self.body_file("openai.json", openai(INSTANT_TRITON, False)),
                    "stream": self.body_file("openai-stream.json", openai(INSTANT_TRITON, True)),
                },
            ),
            "litellm": Target(
                "litellm",
                dict.fromkeys(("nonstream", "stream"), f"http://127.0.0.1:{p.litellm_port}/v1/chat/completions"),
                {
                    "nonstream": self.body_file("openai.json", openai(INSTANT_TRITON, False)),
                    "stream": self.body_file("openai-stream.json", openai(INSTANT_TRITON, True)),
                },
                self.keys_file("litellm.keys", [p.litellm_key]),
            ),
            # Non-streaming only: Portkey 1.15.2 on Node answers every streaming request 500
            # ("TypeError: immutable" as it adds its headers to the relayed stream's response;
            # Portkey-AI/gateway#1389, #1550), so it has no streaming figures to compare.
            "portkey": Target(
                "portkey",
                {"nonstream": f"http://127.0.0.1:{p.portkey_port}/v1/chat/completions"},
                {"nonstream": self.body_file("openai.json", openai(INSTANT_TRITON, False))},
                headers=p.portkey_headers(),
            ),
            "stack": Target(
                "stack",
                dict.fromkeys(("nonstream", "stream"), f"http://127.0.0.1:{p.gateway_port}/v1/chat/completions"),
                {
                    "nonstream": self.body_file("stack.json", openai(INSTANT_MODEL, False)),
                    "stream": self.body_file("stack-stream.json", openai(INSTANT_MODEL, True)),
                },
                self.hot_keys,
            ),
        }

    # -- before measuring --
    def warm(self, targets: dict[str, Target], names: list[str]) -> None:
        for name in names:
            for mode in targets[name].urls:
                try:
                    if mode == "nonstream":
                        run_wrk(targets[name], 4, self.settings.warmup)
                    else:
                        run_loadgen(targets[name], mode, 4, duration=self.settings.warmup)
                except Exception as exc:
                    log(f"warm-up of {name} {mode} failed: {exc}")

    def run(self) -> dict[str, Any]:
        settings, p = self.settings, self.testbed
        started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.git_at_start = run_info.git_state()
        t0 = time.monotonic()
        log(f"starting the platform ({'quick' if settings.quick else 'full'} run, state in {self.state})")
        p.start(settings.workers[0])
        log(f"platform up in {time.monotonic() - t0:.0f}s; LiteLLM: {p.litellm_mode}")
        start_memory = p.memory()
        self.hot = asyncio.run(create_accounts(p.nats_url, 1, "bench-hot"))[0]
        self.hot_keys = self.keys_file("hot.keys", [self.hot[1]])
        self.many = asyncio.run(create_accounts(p.nats_url, settings.billing_accounts, "bench-many"))
        many_keys = self.keys_file("many.keys", [k for _, k in self.many])
        db = Db(p.libpq_url)
        targets = self.targets()
        names = ["direct", "shim", "litellm", "portkey", "stack"]
        self.warm(targets, names)
        # The many-account keys are verified (and cached by the gateway) before billing is measured.
        run_loadgen(targets["stack"], "nonstream", 8, requests=len(self.many) + 8, keys_file=many_keys)

        results: dict[str, Any] = {"config": {**settings.__dict__}, "runs": self.runs}
        for i, workers in enumerate(settings.workers):
            if i:
                log(f"restarting gateway and LiteLLM with {workers} workers")
                p.restart_front(workers)
                targets = self.targets()
                self.warm(targets, ["litellm", "stack"])
            if "sweep" in settings.sections:
                concurrency_sweep.sweep(self, targets, names if i == 0 else ["litellm", "stack"])
            if i == 0:
                sections = {
                    "rate": lambda t=targets: open_loop.open_loop(self, t, names, "nonstream"),
                    "rate_stream": lambda t=targets: open_loop.open_loop(self, t, names, "stream"),
                    "hops": lambda: hops.hops(self),
                    "memory": lambda t=targets: memory.memory(self, t, db, start_memory),
                    "billing": lambda t=targets: billing_under_load.billing(self, t, db, many_keys),
                    "e2e": lambda: end_to_end.e2e(self, self.hot[1]),
                    "profile": lambda t=targets: profiling.profile(self, t),
                }
                for name, section in sections.items():
                    if name not in settings.sections or (name == "profile" and not settings.profile):
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
        p = self.testbed
        return {
            "started_at": started_at,
            "elapsed_s": round(elapsed, 1),
            "machine": {
                "cores": os.cpu_count(),
                "cpu_model": procstat.cpu_model(),
                "mem_gib": procstat.mem_total_gib(),
                "kernel": platform.release(),
            },
            "versions": run_info.versions(p.postgres_version),
            "litellm_mode": p.litellm_mode,
            "litellm_db_probe": p.litellm_db_probe,
            "git": {"at_start": self.git_at_start, "at_end": run_info.git_state()},
            "design": {
                "direct": "wrk/loadgen → Triton HTTP generate (/generate_stream) on instant-echo",
                "shim": "wrk/loadgen → python -m bench shim (aiohttp, 1 process) → Triton HTTP generate",
                "litellm": "wrk/loadgen → LiteLLM proxy (uvicorn, N workers) → shim → Triton",
                "portkey": "wrk/loadgen → Portkey AI Gateway (node build/start-server.js, 1 process; "
                "x-portkey-provider: openai, x-portkey-custom-host: the shim) → shim → Triton",
                "stack": "wrk/loadgen → gateway (N workers) → [auth cache] → [credit lease in memory; billing "
                "grants one per account and replica (Postgres)] → router → Triton gRPC stream; usage event → "
                "JetStream → billing charge against the lease + usage record (Postgres)",
            },
            "commands": ["BENCH_QUICK=1 make bench" if self.settings.quick else "make bench"],
            "state_dir_note": "$STATE is the run's bench/.state/<time> directory (request bodies, key files, logs)",
            "commands_sample": run_info.sample_commands(self.commands, self.state),
        }


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


def main(overrides: Mapping[str, str]) -> int:
    """The gateway run; `overrides` are BENCH_* settings given on the command line."""
    env = {**os.environ, **overrides}
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk (make bench does)", file=sys.stderr)
        return 2
    settings = Settings.from_env(env)
    with state_dir(keep=env.get("BENCH_KEEP_STATE", "") not in ("", "0")) as state:
        bench = GatewayRun(settings, state)
        try:
            results = bench.run()
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            bench.testbed.stop()
        written = outputs.write_outputs(results)
    head = results["headline"]
    log(
        f"done in {results['meta']['elapsed_s']:.0f}s: {head['rps_ratio_vs_litellm']}x LiteLLM's req/s, "
        f"{head['rps_ratio_vs_portkey']}x Portkey's, "
        f"added p50 {head['p50_added_ms']} ms / p99 {head['p99_added_ms']} ms at "
        f"{head['added_ms_measured_at_concurrency']} clients, TTFT added p50 {head['ttft_added_ms_p50']} ms, "
        f"stack/direct tokens/s {head['stack_vs_direct_tokens_per_s']}"
    )
    log(f"wrote {written}" + ("" if written.name == "partial.json" else f" and {outputs.DOC}"))
    return 0
