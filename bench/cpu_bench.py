"""CPU per request of each process of the stack, alone and repeated (not part of make bench).

    python -m bench cpu                        # 5 rounds at 300 req/s non-streaming, 100 streaming
    python -m bench cpu --rounds 3 --label before --out /tmp/before.json
    python -m bench cpu --profile              # then py-spy on every service for one more round
    python -m bench cpu --compare before.json after.json   # the per-process table of two runs

The gateway run measures CPU per request once per point, beside LiteLLM and Portkey; this run
measures only the stack, several rounds of the same load, and reports each process's median, so
that a change to the hot path can be judged by running the code before and after it one after the
other on the same machine (`git worktree add` the old commit and run this there too). CPU time is
read from /proc for each process tree, as in the gateway run; `machine_busy` is the whole machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path
from typing import Any

from bench import RESULTS, log, report
from bench.accounts import create_accounts
from bench.db_checks import Db
from bench.gateway_run import GatewayRun, state_dir
from bench.load import Target, run_loadgen, run_wrk
from bench.procstat import CpuMeter
from bench.sections import profiling
from bench.settings import Settings

SHOWN = ("gateway", "router", "triton", "nats", "postgres", "billing", "usage", "auth")


def one_round(
    bench: GatewayRun, target: Target, mode: str, concurrency: int, duration: int, rate: float
) -> dict[str, Any]:
    meter = CpuMeter(bench.testbed.roots())
    meter.start()
    if mode == "nonstream" and not rate:  # a closed loop without streaming: wrk
        raw, _ = run_wrk(target, concurrency, duration)
        _, ok, _ = report.wrk_counts(raw)
        seconds = raw["duration_us"] / 1e6
    else:  # the load generator, closed loop or (with a rate) open
        raw, _ = run_loadgen(target, mode, concurrency, duration=duration, rate=rate)
        ok, seconds = raw["ok"], raw["duration_s"]
    cpu = meter.stop()
    per_request = {k: round(v * 1000 / ok, 3) for k, v in cpu.items() if k not in ("foreign", "client") and ok}
    per_request["all_processes"] = round(sum(v for k, v in per_request.items() if k != "machine_busy"), 3)
    return {"ok": ok, "rps": round(ok / seconds, 1), "cpu_ms_per_request": per_request}


def medians(rounds: list[dict[str, Any]]) -> dict[str, float]:
    names = {k for r in rounds for k in r["cpu_ms_per_request"]}
    return {k: round(statistics.median(r["cpu_ms_per_request"].get(k, 0.0) for r in rounds), 3) for k in sorted(names)}


def profile(bench: GatewayRun, target: Target, concurrency: int, duration: int, cpu: dict[str, float]) -> dict:
    spy = profiling.py_spy()
    if spy is None:
        return {"skipped": "py-spy is not installed in .venv (bench/setup.sh installs it)"}
    spies = profiling.start_spies(spy, bench.testbed.roots(), duration)
    run_wrk(target, concurrency, duration)
    return profiling.summarize_spies(spies, duration, cpu)


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.from_env({"BENCH_QUICK": "1", "BENCH_PROFILE": "0"})
    with state_dir(keep=False) as state:
        bench = GatewayRun(settings, state)
        try:
            bench.testbed.start(1, peers=False)
            bench.hot = asyncio.run(create_accounts(bench.testbed.nats_url, 1, "bench-cpu"))[0]
            bench.hot_keys = bench.keys_file("hot.keys", [bench.hot[1]])
            target = bench.targets()["stack"]
            run_wrk(target, args.concurrency, 3)
            run_loadgen(target, "stream", args.concurrency, duration=2)
            db = Db(bench.testbed.libpq_url)
            results: dict[str, Any] = {
                "label": args.label,
                "concurrency": args.concurrency,
                "rate": args.rate,
                "stream_rate": args.stream_rate,
                "modes": {},
            }
            for mode in ("nonstream", "stream"):
                rounds = []
                for i in range(args.rounds):
                    db.wait_settled()
                    rate = args.rate if mode == "nonstream" else args.stream_rate
                    rounds.append(one_round(bench, target, mode, args.concurrency, args.duration, rate))
                    log(f"{mode} round {i + 1}: {rounds[-1]['rps']} req/s, {rounds[-1]['cpu_ms_per_request']}")
                results["modes"][mode] = {"median_cpu_ms_per_request": medians(rounds), "rounds": rounds}
            if args.profile:
                db.wait_settled()
                cpu = results["modes"]["nonstream"]["median_cpu_ms_per_request"]
                results["profiles"] = profile(bench, target, args.concurrency, args.duration * 2, cpu)
            db.wait_settled()
            results["exactly_once"] = db.exactly_once()["passed"]
        finally:
            bench.testbed.stop()
    return results


def table(runs: list[dict[str, Any]]) -> str:
    """Markdown: per process, each run's median CPU ms per request, and the last over the first."""
    lines = []
    for mode in ("nonstream", "stream"):
        head = "| process | " + " | ".join(r.get("label") or f"run {i + 1}" for i, r in enumerate(runs))
        head += " | last ÷ first |" if len(runs) > 1 else " |"
        rate = runs[0].get("rate" if mode == "nonstream" else "stream_rate")
        load = f"{rate:g} requests/s" if rate else f"{runs[0]['concurrency']} clients"
        lines += [f"\n{mode}, {load} (ms of CPU per request, median)\n", head]
        lines.append("|---" * (len(runs) + 1 + (len(runs) > 1)) + "|")
        for name in (*SHOWN, "all_processes", "machine_busy"):
            values = [r["modes"][mode]["median_cpu_ms_per_request"].get(name, 0.0) for r in runs]
            row = f"| {name} | " + " | ".join(f"{v:.3f}" for v in values)
            row += f" | {values[-1] / values[0]:.2f} |" if len(runs) > 1 and values[0] else " |"
            lines.append(row)
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5, help="seconds per round")
    parser.add_argument("--concurrency", type=int, default=16, help="clients, or the most in flight at a rate")
    parser.add_argument(
        "--rate", type=float, default=300.0, help="non-streaming requests per second (0: closed loop, wrk)"
    )
    parser.add_argument("--stream-rate", type=float, default=100.0, help="streaming requests per second (0: closed)")
    parser.add_argument("--label", default="")
    parser.add_argument("--profile", action="store_true", help="py-spy every service for one more round")
    parser.add_argument("--out", type=Path, default=RESULTS / "cpu.json")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="RUN.json", help="print the table of saved runs")
    args = parser.parse_args(argv)
    if args.compare:
        print(table([json.loads(p.read_text()) for p in args.compare]))
        return
    results = run(args)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(table([results]))
    log(f"wrote {args.out}")
