"""Profiles (section `profile`; full run, or BENCH_PROFILE=1): py-spy samples each service while the
stack serves non-streaming load at 16 clients; the summaries (bench.pyspy_summary) leave idle
threads out and spread the CPU per request measured without the profiler over the sampled shares.
Writes bench/results/profiles/<service>.txt."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import REPO, RESULTS, log, pyspy_summary, report
from bench.load import Target
from bench.sections.concurrency_sweep import measure

if TYPE_CHECKING:
    from bench.gateway_run import GatewayRun


PROFILED = ("gateway", "router", "billing", "usage", "auth")
PROFILES = RESULTS / "profiles"
# One py-spy per service: (its process, the file of collapsed stacks it writes, its argv).
Spies = dict[str, tuple[subprocess.Popen[bytes], Path, list[str]]]


def py_spy() -> Path | None:
    spy = Path(sys.executable).parent / "py-spy"
    return spy if spy.exists() else None


def start_spies(spy: Path, roots: dict[str, int], duration: int) -> Spies:
    """py-spy recording each service (and its worker processes) for `duration` seconds."""
    PROFILES.mkdir(parents=True, exist_ok=True)
    spies: Spies = {}
    for name in PROFILED:
        raw = PROFILES / f"{name}.collapsed"
        argv = [str(spy), "record", "--pid", str(roots[name]), "--duration", str(duration), "--rate", "250"]
        argv += ["--format", "raw", "--nonblocking", "--subprocesses", "-o", str(raw)]
        spies[name] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), raw, argv)
    return spies


def summarize_spies(spies: Spies, duration: int, cpu: dict[str, float]) -> dict[str, Any]:
    """Each service's summary, its shares spread over `cpu` (ms per request measured without the
    profiler), written to bench/results/profiles/<service>.txt."""
    summaries: dict[str, Any] = {}
    for name, (proc, raw, _) in spies.items():
        proc.wait(timeout=duration + 60)
        if not raw.exists():
            summaries[name] = {"error": proc.stderr.read().decode()[-500:] if proc.stderr else "no output"}
            continue
        summary = pyspy_summary.with_cpu(pyspy_summary.summarize_collapsed(raw.read_text()), cpu.get(name))
        summaries[name] = summary
        (PROFILES / f"{name}.txt").write_text(pyspy_summary.render_text(name, summary))
    log(f"profiles written to {PROFILES}")
    return summaries


def profile(bench: GatewayRun, targets: dict[str, Target]) -> dict[str, Any]:
    """py-spy on each service while the stack serves non-streaming load at 16 clients."""
    spy = py_spy()
    if spy is None:
        return {"skipped": "py-spy is not installed in .venv (bench/setup.sh installs it)"}
    d = bench.settings.profile_duration
    spies = start_spies(spy, bench.testbed.roots(), d)
    for _, _, argv in spies.values():
        bench.commands.append(shlex.join(["py-spy", *argv[1:]]).replace(str(REPO) + "/", ""))
    time.sleep(0.5)
    run = measure(bench, targets["stack"], "nonstream", 16, profiled=True)
    bench.runs.remove(run)  # sampling slows the services: not a benchmark figure
    # CPU per request of each service without the profiler, from the sweep's run at 16 clients.
    unprofiled = report.find_run(
        bench.runs, target="stack", mode="nonstream", concurrency=16, workers=bench.testbed.workers
    )
    cpu = (unprofiled or run).get("cpu_ms_per_request", {})
    load = {"load": {"rps": run["rps"], "requests": run["ok"], "concurrency": 16}}
    return {**load, **summarize_spies(spies, d, cpu)}
