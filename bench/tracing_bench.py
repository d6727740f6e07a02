"""What tracing costs: the whole stack with tracing off and on, side by side, as ratios.

    .venv/bin/python -m bench tracing            # ~3 minutes on 2 cores (make bench-tracing)
    .venv/bin/python -m bench tracing --quick    # one round, shorter points (~1.5 minutes)

Each variant is a fresh platform on 127.0.0.1: a private Postgres (fsync on), nats-server, a
tritonserver serving only the instant-echo model (it computes nothing, so whatever sits in front of
it is what is measured), and the five services. "on" sets OTEL_EXPORTER_OTLP_ENDPOINT for every
service and for Triton, pointing at an OTLP/HTTP sink in its own process (`python -m bench
otlp-sink`, which decodes every export as a collector would); "off" sets nothing, as by default.
Variants alternate off, on, on, off (each round), so a drift in the machine's load (a shared box)
spreads over both.

Per variant, after a warm-up: `--concurrency` closed-loop clients of one Enterprise account for
`--duration` seconds, non-streaming and then streaming (16 tokens), with the CPU seconds of every
process of the platform (and of the sink) per request. The report gives each figure for off and
on, and on ÷ off.

Results: bench/results/tracing.json and a markdown table on stdout (docs/benchmarks.md, "Tracing").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import REPO, RESULTS, log, pg, procstat, report, tools
from bench.accounts import create_accounts
from bench.load import Target, run_loadgen
from bench.settings import INSTANT_MODEL, INSTANT_PRICE_MICRO_PER_MTOK, INSTANT_TRITON, MESSAGES
from lexora_contracts.registry import ModelRecord, Pricing
from lexora_dev import stack
from lexora_dev.processes import ManagedProcess, free_port, http_ok, wait_until

MODES = ("nonstream", "stream")
MAX_TOKENS = 16


def instant_record(endpoint: Any) -> ModelRecord:
    price = INSTANT_PRICE_MICRO_PER_MTOK
    return ModelRecord(
        id=INSTANT_MODEL,
        owned_by="lexora-bench",
        triton_model=INSTANT_TRITON,
        context_length=8192,
        pricing=Pricing(input_micro_per_mtok=price, output_micro_per_mtok=price),
        capabilities=["chat"],
        created=1730000000,
        endpoints=[endpoint],
    )


class Platform:
    """One variant's platform; `tracing_env` empty for "off"."""

    def __init__(self, state: Path, tracing_env: dict[str, str]):
        self.state = state
        self.tracing_env = tracing_env
        self.procs: dict[str, ManagedProcess] = {}
        self.triton: stack.SupervisedTriton | None = None
        self.postgres: pg.BenchPostgres | None = None
        self._exits = contextlib.ExitStack()

    def start(self) -> None:
        repo = self.state / "model-repo"
        repo.mkdir(parents=True)
        (repo / INSTANT_TRITON).symlink_to(stack.MODEL_REPO / INSTANT_TRITON)
        environ = {**os.environ, **self.tracing_env}
        self.triton = stack.SupervisedTriton(self.state / "triton", repo, environ=environ)
        self.postgres = self._exits.enter_context(pg.private_postgres(self.state / "pg"))
        database_url = self.postgres.url
        nats_port = free_port()
        self.procs["nats"] = stack.start_nats(self.state, nats_port)
        self.nats_url = f"nats://127.0.0.1:{nats_port}"
        stack.prepare_database(database_url)
        stack.publish_catalog(self.nats_url, [instant_record(self.triton.endpoint)])
        self.gateway_port = free_port()
        config = stack.ServiceConfig(
            self.nats_url, database_url, self.state, self.gateway_port, extra_env=dict(self.tracing_env)
        )
        for service in stack.SERVICES:
            self.procs[service] = stack.start_service(service, config)
        stack.wait_for_gateway(self.gateway_port, self.procs["gateway"])

    def roots(self) -> dict[str, int]:
        roots = {name: p.proc.pid for name, p in self.procs.items() if p.proc is not None and p.alive}
        if self.triton is not None and self.triton.process.proc is not None:
            roots["triton"] = self.triton.process.proc.pid
        if self.postgres is not None and self.postgres.postmaster_pid:
            roots["postgres"] = self.postgres.postmaster_pid
        return roots

    def stop(self) -> None:
        for process in reversed(list(self.procs.values())):
            process.stop()
        if self.triton is not None:
            self.triton.stop()
        self._exits.close()


def _sink_stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as response:
        return json.loads(response.read())


def settled_span_count(port: int, quiet_s: float = 6.0, timeout_s: float = 60.0) -> int:
    """The spans the sink has received once no more arrive for `quiet_s` (longer than the batch
    processors' schedule delay, 5 s by default): every span of the requests before is in."""
    last, changed_at, deadline = _sink_stats(port)["spans"], time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() - changed_at < quiet_s and time.monotonic() < deadline:
        time.sleep(0.5)
        now = _sink_stats(port)["spans"]
        if now != last:
            last, changed_at = now, time.monotonic()
    return last


def measure_variant(
    name: str, state: Path, sink_port: int | None, sink_pid: int | None, args: argparse.Namespace
) -> dict[str, Any]:
    tracing_env = {}
    if sink_port is not None:
        tracing_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"}
    platform = Platform(state, tracing_env)
    try:
        platform.start()
        [(_, key)] = asyncio.run(create_accounts(platform.nats_url, 1, f"tracing-{name}"))
        keys = state / "keys"
        keys.write_text(key + "\n")
        url = f"http://127.0.0.1:{platform.gateway_port}/v1/chat/completions"
        bodies = {}
        for mode in MODES:
            body = {"model": INSTANT_MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "stream": mode == "stream"}
            bodies[mode] = state / f"{mode}.json"
            bodies[mode].write_text(json.dumps(body))
        target = Target("stack", dict.fromkeys(MODES, url), bodies, keys)
        for mode in MODES:  # warm-up: first connections, caches, JIT-less but cold paths
            run_loadgen(target, mode, args.concurrency, duration=args.warmup)
        out: dict[str, Any] = {"variant": name, "tracing": bool(tracing_env), "modes": {}}
        for mode in MODES:
            roots = platform.roots()
            if sink_pid is not None and tracing_env:
                roots["otlp_sink"] = sink_pid
            meter = procstat.CpuMeter(roots)
            traced = sink_port is not None and bool(tracing_env)
            spans_before = settled_span_count(sink_port) if traced else 0
            meter.start()
            result, command = run_loadgen(target, mode, args.concurrency, duration=args.duration)
            cpu = meter.stop()
            ok = max(result["ok"], 1)
            services = sum(cpu.get(service, 0.0) for service in stack.SERVICES)
            figures: dict[str, Any] = {
                "rps": round(result["rps"], 1),
                "ok": result["ok"],
                "statuses": result["statuses"],
                "latency_ms": report.summarize(result["latency_ms"]),
                "services_cpu_ms_per_request": round(services * 1000 / ok, 3),
                "cpu_ms_per_request": {k: round(v * 1000 / ok, 3) for k, v in cpu.items()},
                # Cores busy with work outside the benchmark meanwhile: how noisy the machine was.
                "foreign_cores": round(cpu["foreign"] / max(result["duration_s"], 0.001), 2),
                "command": command,
            }
            if mode == "stream":
                figures["ttft_ms"] = report.summarize(result["ttft_ms"])
            if traced:
                spans = settled_span_count(sink_port) - spans_before
                figures["spans_per_request"] = round(spans / max(result["requests"], 1), 2)
            out["modes"][mode] = figures
            log(
                f"{name} {mode}: {figures['rps']} req/s, p50 {figures['latency_ms'].get('p50')} ms, "
                f"services {figures['services_cpu_ms_per_request']} CPU ms/request"
            )
        return out
    finally:
        platform.stop()


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode: the median over rounds of each figure, off and on, and on ÷ off."""
    summary: dict[str, Any] = {}
    for mode in MODES:
        figures: dict[str, dict[str, float]] = {}
        for tracing, label in ((False, "off"), (True, "on")):
            runs_of = [r["modes"][mode] for r in runs if r["tracing"] is tracing]
            latency = "ttft_ms" if mode == "stream" else "latency_ms"
            figures[label] = {
                "rps": statistics.median(r["rps"] for r in runs_of),
                "p50_ms": statistics.median(r[latency]["p50"] for r in runs_of),
                "p99_ms": statistics.median(r[latency]["p99"] for r in runs_of),
                "services_cpu_ms_per_request": statistics.median(r["services_cpu_ms_per_request"] for r in runs_of),
                "foreign_cores": statistics.median(r.get("foreign_cores", 0.0) for r in runs_of),
            }
            if tracing:
                figures[label]["spans_per_request"] = statistics.median(r.get("spans_per_request", 0) for r in runs_of)
        off, on = figures["off"], figures["on"]
        figures["on_over_off"] = {key: report.ratio(on[key], off[key]) for key in off}
        summary[mode] = figures
    return summary


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| mode | figure | tracing off | tracing on | on ÷ off |",
        "|---|---|---|---|---|",
    ]
    names = {
        "rps": "req/s",
        "p50_ms": "p50 ms",
        "p99_ms": "p99 ms",
        "services_cpu_ms_per_request": "services' CPU ms per request",
        "foreign_cores": "cores busy with other work (noise)",
    }
    for mode, figures in summary.items():
        shown = "non-streaming (latency)" if mode == "nonstream" else "streaming (time to first token)"
        for key, name in names.items():
            ratio = None if key == "foreign_cores" else figures["on_over_off"][key]
            lines.append(
                f"| {shown} | {name} | {figures['off'][key]:.2f} | {figures['on'][key]:.2f} | "
                f"{'-' if ratio is None else f'{ratio:.3f}'} |"
            )
        lines.append(f"| {shown} | spans exported per request | - | {figures['on']['spans_per_request']:.1f} | - |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench tracing", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one round, shorter points")
    parser.add_argument("--rounds", type=int, help="rounds of off, on, on, off (default 2, quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per measured point (default 10, quick 5)")
    parser.add_argument("--concurrency", type=int, default=4, help="closed-loop clients")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.duration = args.duration or (5.0 if args.quick else 10.0)
    args.warmup = 2.0 if args.quick else 3.0
    root = Path(tempfile.mkdtemp(prefix="lexora-tracing-bench-"))
    sink_port = free_port()
    sink = ManagedProcess(
        "otlp-sink", tools.argv("otlp-sink", "--port", str(sink_port)), root / "logs" / "sink.log", cwd=REPO
    ).start()
    wait_until(lambda: http_ok(f"http://127.0.0.1:{sink_port}/stats"), 30, "otlp-sink", sink)
    started = dt.datetime.now(dt.UTC)
    runs = []
    try:
        order = [name for _ in range(args.rounds) for name in ("off", "on", "on", "off")]
        for i, name in enumerate(order):
            log(f"variant {i + 1}/{len(order)}: tracing {name}")
            state = root / f"{i}-{name}"
            state.mkdir()
            runs.append(
                measure_variant(
                    name, state, sink_port if name == "on" else None, sink.proc.pid if sink.proc else None, args
                )
            )
    finally:
        sink.stop()
    summary = summarize(runs)
    results = {
        "started_at": started.isoformat(timespec="seconds"),
        "cpu": procstat.cpu_model(),
        "cores": os.cpu_count(),
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "summary": summary,
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tracing.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(summary))
    shutil.rmtree(root, ignore_errors=True)
