"""The open loop (sections `rate`, non-streaming, and `rate_stream`, judged by time to first
token): every target at one fixed request rate, a share of LiteLLM's peak from the sweep, so each
is below its own peak and what a front adds is not hidden by the closed loop's waiting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench import log, procstat, report
from bench.load import Target, run_loadgen
from bench.settings import OPEN_LOOP_MAX_IN_FLIGHT, OPEN_LOOP_SHARE

if TYPE_CHECKING:
    from bench.gateway_run import GatewayRun


def open_loop(bench: GatewayRun, targets: dict[str, Target], names: list[str], mode: str) -> dict[str, Any]:
    """Every target at the same fixed rate (open loop): a share of LiteLLM's peak from the sweep in
    that mode. Latency (and, streaming, time to first token) counts from when each request was due
    if it had to wait, so queueing behind a slow answer is not hidden by the client waiting
    (coordinated omission)."""
    workers = bench.testbed.workers
    litellm_peak = report.overhead(bench.runs, workers, mode)["peak_rps"].get("litellm", {}).get("rps")
    if not litellm_peak:
        return {"error": f"no LiteLLM {mode} peak rate from the sweep (the rate sections need the sweep)"}
    rate = round(litellm_peak * OPEN_LOOP_SHARE, 1)
    duration = max(2 * bench.settings.duration, 8)
    metric = report.metric_of(mode)
    runs = []
    for name in [n for n in names if mode in targets[n].urls]:
        meter = procstat.CpuMeter(bench.testbed.roots())
        meter.start()
        raw, command = run_loadgen(targets[name], mode, OPEN_LOOP_MAX_IN_FLIGHT, duration=duration, rate=rate)
        cpu = meter.stop()
        bench.commands.append(command)
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
