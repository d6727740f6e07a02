"""Programs the harness starts in their own processes, each also a `python -m bench` subcommand:
the load generator (`loadgen`), billing's reserve-then-settle load (`billing-load`), the hop probe
(`hops`), the OpenAI shim in front of Triton (`shim`), and wrk's report script (wrk_report.lua)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from bench import REPO

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"


def argv(subcommand: str, *args: str) -> list[str]:
    """`python -m bench <subcommand> args` with this interpreter; run it with cwd=REPO (where the
    bench package is importable)."""
    return [sys.executable, "-m", "bench", subcommand, *args]


def shown(command: list[str]) -> str:
    """A command from argv() as the results record it: `python -m bench ...`, repository paths relative."""
    return shlex.join(["python", *command[1:]]).replace(str(REPO) + "/", "")
