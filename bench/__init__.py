"""Lexora's benchmarks: gateway overhead and throughput side by side with LiteLLM, and billing alone.

    python -m bench                # the full gateway run (make bench); --quick: under 5 minutes
    python -m bench --help         # every run and tool (docs/benchmarks.md explains the figures)

Layout: `bench.cli` is the command line; `bench.gateway_run` runs the gateway benchmark's sections
(`bench.sections`) on a `bench.testbed`; `bench.billing_bench` compares billing alone before and
after a change; `bench.tools` are the programs the harness starts in their own processes (load
generators, the hop probe, the OpenAI shim); the rest are shared helpers (process statistics,
report and statistics, py-spy summaries, Postgres).
"""

from __future__ import annotations

import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)
