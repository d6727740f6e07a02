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


def profile(bench: GatewayRun, targets: dict[str, Target]) -> dict[str, Any]:
    """py-spy on each service while the stack serves non-streaming load at 16 clients."""
    out_dir = RESULTS / "profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return {"skipped": "py-spy is not installed in .venv (bench/setup.sh installs it)"}
    d = bench.settings.profile_duration
    roots = bench.testbed.roots()
    spies = {}
    for name in ("gateway", "router", "billing", "usage", "auth"):
        raw = out_dir / f"{name}.collapsed"
        argv = [str(spy), "record", "--pid", str(roots[name]), "--duration", str(d), "--rate", "250"]
        argv += ["--format", "raw", "--nonblocking", "--subprocesses", "-o", str(raw)]
        spies[name] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), raw)
        bench.commands.append(shlex.join(["py-spy", *argv[1:]]).replace(str(REPO) + "/", ""))
    time.sleep(0.5)
    run = measure(bench, targets["stack"], "nonstream", 16, profiled=True)
    bench.runs.remove(run)  # sampling slows the services: not a benchmark figure
    # CPU per request of each service without the profiler, from the sweep's run at 16 clients.
    unprofiled = report.find_run(
        bench.runs, target="stack", mode="nonstream", concurrency=16, workers=bench.testbed.workers
    )
    cpu = (unprofiled or run).get("cpu_ms_per_request", {})
    summaries: dict[str, Any] = {"load": {"rps": run["rps"], "requests": run["ok"], "concurrency": 16}}
    for name, (proc, raw) in spies.items():
        proc.wait(timeout=d + 60)
        if not raw.exists():
            summaries[name] = {"error": proc.stderr.read().decode()[-500:] if proc.stderr else "no output"}
            continue
        summary = pyspy_summary.with_cpu(pyspy_summary.summarize_collapsed(raw.read_text()), cpu.get(name))
        summaries[name] = summary
        (out_dir / f"{name}.txt").write_text(pyspy_summary.render_text(name, summary))
    log(f"profiles written to {out_dir}")
    return summaries
