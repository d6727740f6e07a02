"""The benchmarks' command line.

    python -m bench                         # the gateway run, full (~25 minutes on 2 cores; make bench)
    python -m bench --quick                 # the same measurements, shorter and fewer levels (< 5 minutes)
    python -m bench --sections hops,memory  # some sections only (writes partial.json, leaves the docs alone)
    python -m bench render [results.json]   # derive the headline and the docs' results section again
    python -m bench billing --baseline-ref <git ref>   # billing alone, before and after a change
    python -m bench tracing                 # the stack with tracing off and on, side by side
    python -m bench routing                 # round robin vs our routing policy over simulated replicas
    python -m bench cpu                     # CPU per request of each process of the stack, over rounds

The gateway run's options are also read from the environment (BENCH_QUICK=1, BENCH_LEVELS=1,4,16,
...; docs/benchmarks.md lists them); an option given here wins. The other subcommands are the
programs the runs start in their own processes, runnable alone (`python -m bench hops --help`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

# subcommand -> (module, function taking argv, what it does); each parses its own arguments.
PROGRAMS: dict[str, tuple[str, str, str]] = {
    "billing": (
        "bench.billing_bench",
        "main",
        "billing alone on Postgres, the working tree against a git ref side by side (not part of make bench)",
    ),
    "hops": (
        "bench.tools.hop_probe",
        "cli",
        "each hop of the request path alone, at one client, on a running platform",
    ),
    "loadgen": ("bench.tools.loadgen", "main", "closed- or open-loop HTTP load generator (streaming TTFT, fixed rate)"),
    "billing-load": ("bench.tools.billing_load", "main", "reserve-then-settle load on billing, over NATS"),
    "shim": ("bench.tools.openai_shim", "main", "minimal OpenAI-compatible front for Triton (LiteLLM's backend)"),
    "tracing": (
        "bench.tracing_bench",
        "main",
        "the stack with tracing off and on (OTLP sink), side by side (not part of make bench)",
    ),
    "routing": (
        "bench.routing_bench",
        "main",
        "time to first token over simulated LLM replicas, round robin vs our policy (make bench-routing)",
    ),
    "cpu": (
        "bench.cpu_bench",
        "main",
        "CPU per request of each process of the stack alone, over rounds; --compare saved runs (not in make bench)",
    ),
    "otlp-sink": ("bench.tools.otlp_sink", "main", "an OTLP/HTTP trace sink that counts the spans it receives"),
}

# gateway-run option -> environment variable it sets (bench.settings reads them)
ENVIRONMENT = {
    "quick": "BENCH_QUICK",
    "levels": "BENCH_LEVELS",
    "duration": "BENCH_DURATION",
    "workers": "BENCH_WORKERS",
    "sections": "BENCH_SECTIONS",
    "profile": "BENCH_PROFILE",
    "pg_fsync": "BENCH_PG_FSYNC",
    "litellm_db": "BENCH_LITELLM_DB",
    "memory_requests": "BENCH_MEMORY_REQUESTS",
    "keep_state": "BENCH_KEEP_STATE",
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    run = top.add_argument_group("the gateway run (no subcommand)")
    run.add_argument("--quick", action="store_const", const="1", help="shorter, fewer levels (BENCH_QUICK=1)")
    run.add_argument("--levels", metavar="1,4,16", help="client concurrencies of the sweep (BENCH_LEVELS)")
    run.add_argument("--duration", metavar="S", help="seconds per measured point (BENCH_DURATION)")
    run.add_argument("--workers", metavar="1,2", help="gateway and LiteLLM worker processes (BENCH_WORKERS)")
    run.add_argument("--sections", metavar="sweep,rate,...", help="run only these sections (BENCH_SECTIONS)")
    run.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        help="py-spy profiles of the services (BENCH_PROFILE; on in the full run)",
    )
    run.add_argument("--pg-fsync", choices=("on", "off"), help="Postgres durability (BENCH_PG_FSYNC, default on)")
    run.add_argument(
        "--litellm-db", action="store_const", const="1", help="try LiteLLM's database mode first (BENCH_LITELLM_DB=1)"
    )
    run.add_argument(
        "--memory-requests", metavar="N", help="requests in the memory section's long run (BENCH_MEMORY_REQUESTS)"
    )
    run.add_argument(
        "--keep-state",
        action="store_const",
        const="1",
        help="keep bench/.state/<time>/logs on success (BENCH_KEEP_STATE=1)",
    )
    commands = top.add_subparsers(dest="command", title="subcommands", metavar="COMMAND")
    render = commands.add_parser("render", help="derive the headline and the docs' results section from a saved run")
    render.add_argument("results", nargs="?", type=Path, help="a run's JSON (default: bench/results/full.json)")
    for name, (_, _, what) in PROGRAMS.items():
        commands.add_parser(name, help=what, add_help=False)  # listed here; they parse their own arguments
    return top


def environment(args: argparse.Namespace) -> dict[str, str]:
    """The environment variables the given options stand for."""
    out = {}
    for option, variable in ENVIRONMENT.items():
        value = getattr(args, option, None)
        if isinstance(value, bool):
            value = "1" if value else "0"
        if value is not None:
            out[variable] = str(value)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PROGRAMS:
        module, function, _ = PROGRAMS[argv[0]]
        program: Callable[[list[str]], object] = getattr(importlib.import_module(module), function)
        program(argv[1:])
        return 0
    args = parser().parse_args(argv)
    # Imported here: the programs above need none of the gateway run's code.
    if args.command == "render":
        from bench import outputs

        return outputs.rerender(args.results)
    from bench import gateway_run

    return gateway_run.main(environment(args))
