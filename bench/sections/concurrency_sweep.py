"""The closed-loop sweep (section `sweep`, results `runs`): every target (Triton direct, the shim,
LiteLLM, the Lexora stack) at each client concurrency, non-streaming with wrk and streaming with
`python -m bench loadgen` (time to first token). Each point records throughput, latency
percentiles, CPU per request of each process, nats-server messages per request, and the CPU that
processes outside the benchmark used meanwhile. The report derives from these points the
throughput ratio against LiteLLM and the added latency at LiteLLM's saturation concurrency."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench import log, procstat, report
from bench.load import Target, run_loadgen, run_wrk

if TYPE_CHECKING:
    from bench.gateway_run import GatewayRun


def measure(bench: GatewayRun, target: Target, mode: str, concurrency: int, **extra: Any) -> dict[str, Any]:
    meter = procstat.CpuMeter(bench.testbed.roots())
    nats_before = bench.testbed.nats_counts()
    meter.start()
    if mode == "nonstream":
        raw, command = run_wrk(target, concurrency, bench.settings.duration)
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
        raw, command = run_loadgen(target, mode, concurrency, duration=bench.settings.duration)
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
    nats_after = bench.testbed.nats_counts()
    if target.name == "stack" and ok:
        run["nats_msgs_in_per_request"] = round((nats_after[0] - nats_before[0]) / ok, 1)
        run["nats_msgs_out_per_request"] = round((nats_after[1] - nats_before[1]) / ok, 1)
    run.update(
        {
            "target": target.name,
            "mode": mode,
            "concurrency": concurrency,
            "workers": bench.testbed.workers,
            "duration_s": round(duration, 3),
            "rps": round(ok / duration, 1) if duration else 0.0,
            "cpu_ms_per_request": {k: round(v * 1000 / ok, 3) for k, v in cpu.items() if ok and k != "foreign"},
            "foreign_cpu_cores": round(cpu["foreign"] / duration, 2) if duration else None,
            "client_cpu_cores": round(cpu["client"] / duration, 2) if duration else None,
            "command": command,
            **extra,
        }
    )
    bench.commands.append(command)
    bench.runs.append(run)
    lat = run.get("ttft_ms") if mode == "stream" else run["latency_ms"]
    log(
        f"{target.name:8s} {mode:9s} c={concurrency:<3d} {run['rps']:8.1f} req/s  "
        f"p50 {lat.get('p50', float('nan')):7.2f} ms  p99 {lat.get('p99', float('nan')):7.2f} ms  "
        f"errors {sum(errors.values())}  other load {run['foreign_cpu_cores']} cores"
    )
    if errors and sum(errors.values()) > max(ok // 100, 2):
        log(f"  WARNING: {target.name} answered {errors}")
    return run


def sweep(bench: GatewayRun, targets: dict[str, Target], names: list[str]) -> None:
    """Every level, every target, interleaved (rotating the order) so slow drifts in the machine's
    load spread evenly over the targets instead of landing on one."""
    for mode in ("nonstream", "stream"):
        in_mode = [name for name in names if mode in targets[name].urls]
        for i, concurrency in enumerate(bench.settings.levels):
            order = in_mode[i % len(in_mode) :] + in_mode[: i % len(in_mode)]
            for name in order:
                try:
                    measure(bench, targets[name], mode, concurrency)
                except Exception as exc:
                    log(f"{name} {mode} c={concurrency} failed: {exc}")
