"""Pure statistics and reporting for the benchmark: summaries, derived figures, markdown.

No I/O beyond what callers pass in, so it is unit-tested (tests/unit/test_bench_harness.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

PERCENTILES = (50, 75, 90, 95, 99, 99.9)
TARGETS = ("direct", "shim", "litellm", "portkey", "stack")
TARGET_LABELS = {
    "direct": "Triton direct",
    "shim": "OpenAI shim → Triton",
    "litellm": "LiteLLM → shim → Triton",
    "portkey": "Portkey → shim → Triton",
    "stack": "Lexora stack → Triton",
}
HOP_LABELS = {
    "nats_request_reply": "NATS request/reply to an idle service ($SRV.PING)",
    "billing_reserve": "billing reserve (NATS + one Postgres transaction)",
    "kv_counter_cas": "rate-limit counter: NATS KV get + compare-and-set",
    "jetstream_publish_ack": "JetStream publish + ack (usage event)",
    "triton_grpc_stream": "Triton gRPC, a response per token (streaming, endpoint without an HTTP address)",
    "triton_http_stream": "Triton HTTP generate_stream, a response per token (the router's streaming)",
    "triton_grpc_single": "Triton gRPC, one response (stream=false, a call each; the router shares one)",
    "triton_http_generate": "Triton HTTP generate (the direct baseline)",
    "router_job": "router job over NATS (router + Triton + usage event)",
    "gateway_http": "whole request through the gateway",
}
# What is reported as "added": (name, the target, the one it is measured over, label).
ADDED_PAIRS = (
    ("stack_vs_direct", "stack", "direct", "Lexora stack over Triton direct"),
    ("litellm_vs_shim", "litellm", "shim", "LiteLLM over its backend (the shim)"),
    ("litellm_vs_direct", "litellm", "direct", "LiteLLM + shim over Triton direct"),
    ("portkey_vs_shim", "portkey", "shim", "Portkey over its backend (the shim)"),
    ("shim_vs_direct", "shim", "direct", "shim over Triton direct"),
)
# A level counts as saturated from the first concurrency reaching this share of the peak rate.
SATURATION_SHARE = 0.9
# The targets (issue 27, on a 2-core machine, one run): added latency at 1 client (stack − direct),
# and at a fixed rate of 90% of LiteLLM's peak (open loop); throughput against each peer; CPU per
# request over every process; memory growth. "_MIN": the least that is acceptable.
TARGET_C1_P50_ADDED_MS = 1.0
TARGET_C1_P50_ADDED_MS_MIN = 1.5
TARGET_C1_P99_ADDED_MS = 4.0
TARGET_OPEN_LOOP_P50_ADDED_MS = 1.5
TARGET_OPEN_LOOP_P99_ADDED_MS = 4.0
TARGET_RPS_RATIO = 10.0
TARGET_RPS_RATIO_MIN = 8.0
TARGET_RPS_RATIO_VS_PORTKEY = 1.0
TARGET_CPU_MS_PER_REQUEST = 1.5
TARGET_MEMORY_GROWTH_MIB_PER_10K = 1.0  # "about 0": under 1 MiB per 10,000 requests, every process
# The processes whose CPU counts towards each target's CPU per request.
CPU_PROCESSES = {
    "stack": ("gateway", "auth", "billing", "usage", "router", "nats", "postgres", "triton", "client"),
    "litellm": ("litellm", "shim", "triton", "client"),
    "portkey": ("portkey", "shim", "triton", "client"),
}


def metric_of(mode: str) -> str:
    """The latency a mode is judged by: time to first token when streaming, else the whole answer."""
    return "ttft_ms" if mode == "stream" else "latency_ms"


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _key(q: float) -> str:
    return f"p{q:g}".replace(".", "")


def summarize(values: Sequence[float]) -> dict[str, float]:
    """p50 … p99.9, max and mean of a list of milliseconds."""
    if not values:
        return {"n": 0}
    out: dict[str, float] = {"n": len(values)}
    for q in PERCENTILES:
        out[_key(q)] = round(percentile(values, q), 3)
    out["max"] = round(max(values), 3)
    out["mean"] = round(sum(values) / len(values), 3)
    return out


def summarize_wrk(wrk: dict[str, Any]) -> dict[str, float]:
    """wrk's own histogram percentiles (microseconds) as the same summary shape in milliseconds."""
    lat = wrk["latency_us"]
    out: dict[str, float] = {"n": wrk["requests"]}
    for q in PERCENTILES:
        out[_key(q)] = round(lat["percentiles"][f"{q:g}"] / 1000, 3)
    out["max"] = round(lat["max"] / 1000, 3)
    out["mean"] = round(lat["mean"] / 1000, 3)
    return out


def wrk_counts(wrk: dict[str, Any]) -> tuple[int, int, dict[str, int]]:
    """(requests answered, answered with 2xx/3xx, errors by kind) from wrk's summary."""
    errors = {k: v for k, v in wrk["errors"].items() if v}
    return wrk["requests"], wrk["requests"] - wrk["errors"]["status"], errors


def peak(points: Iterable[tuple[int, float]]) -> tuple[int, float]:
    """(concurrency, rate) with the highest rate; (0, 0.0) for no points."""
    best = (0, 0.0)
    for concurrency, rate in points:
        if rate > best[1]:
            best = (concurrency, rate)
    return best


def saturation_concurrency(points: Sequence[tuple[int, float]], share: float = SATURATION_SHARE) -> int:
    """The lowest client concurrency at which the rate reaches `share` of its peak."""
    _, top = peak(points)
    for concurrency, rate in sorted(points):
        if rate >= share * top:
            return concurrency
    return 0


def added(over: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    """Percentile by percentile, what `over` adds on top of `base` (ms)."""
    return {k: round(over[k] - base[k], 3) for k in over if k.startswith("p") and k in base}


def added_pairs(latency_of: Callable[[str], dict[str, float] | None]) -> dict[str, dict[str, float]]:
    """Every pair of ADDED_PAIRS whose two targets both have latencies: what one adds over the other."""
    out = {}
    for name, over, base, _ in ADDED_PAIRS:
        a, b = latency_of(over), latency_of(base)
        if a and b and a.get("n") and b.get("n"):
            out[name] = added(a, b)
    return out


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def find_run(runs: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for run in runs:
        if all(run.get(k) == v for k, v in match.items()):
            return run
    return None


def overhead(runs: Sequence[dict[str, Any]], workers: int, mode: str) -> dict[str, Any]:
    """Peak rates, LiteLLM's saturation point and added latencies for one worker count and mode."""
    metric = metric_of(mode)
    selected = [r for r in runs if r.get("workers") == workers and r.get("mode") == mode and r.get("ok")]
    # Triton, the shim and Portkey (one Node process) do not depend on the front's worker count:
    # measured once, used for all.
    for target in ("direct", "shim", "portkey"):
        if not any(r["target"] == target for r in selected):
            selected += [r for r in runs if r.get("target") == target and r.get("mode") == mode and r.get("ok")]
    by_target: dict[str, list[tuple[int, float]]] = {}
    for run in selected:
        by_target.setdefault(run["target"], []).append((run["concurrency"], run["rps"]))
    peaks = {t: peak(points) for t, points in by_target.items()}
    c_sat = saturation_concurrency(by_target.get("litellm", []))

    def lat(target: str, concurrency: int) -> dict[str, float] | None:
        run = find_run(selected, target=target, concurrency=concurrency)
        return run.get(metric) if run else None

    added_at: dict[str, dict[str, Any]] = {}
    levels = sorted({1, c_sat} - {0})
    for concurrency in levels:
        added_at[str(concurrency)] = added_pairs(lambda target, c=concurrency: lat(target, c))
    stack_peak, litellm_peak = peaks.get("stack", (0, 0.0))[1], peaks.get("litellm", (0, 0.0))[1]
    return {
        "workers": workers,
        "mode": mode,
        "metric": metric,
        "peak_rps": {t: {"concurrency": c, "rps": round(r, 1)} for t, (c, r) in peaks.items()},
        "litellm_saturation_concurrency": c_sat,
        "rps_ratio_vs_litellm": ratio(stack_peak, litellm_peak),
        "rps_ratio_vs_portkey": ratio(stack_peak, peaks.get("portkey", (0, 0.0))[1]),
        "stack_vs_direct_rps": ratio(stack_peak, peaks.get("direct", (0, 0.0))[1]),
        "added_ms": added_at,
    }


def closed_loop_floor(runs: Sequence[dict[str, Any]], workers: int, concurrency: int, cores: int) -> dict[str, Any]:
    """What the machine allows the stack at `concurrency` closed-loop clients (non-streaming).

    With N cores and X ms of CPU per request summed over every process of the stack (Triton and
    the load generator included), the stack serves at most N / X requests per ms; a closed loop of
    c clients then waits on average c / rate, so its mean latency is at least c * X / N (Little's
    law). `cpu_budget_for_p50_target_ms` inverts that: the CPU per request at which this floor
    equals Triton direct's p50 plus the added-p50 target, a necessary condition for meeting it."""
    stack = find_run(runs, target="stack", mode="nonstream", workers=workers, concurrency=concurrency)
    direct = find_run(runs, target="direct", mode="nonstream", concurrency=concurrency)
    cpu = (stack or {}).get("cpu_ms_per_request") or {}
    if not stack or not direct or not cpu or concurrency < 1 or cores < 1:
        return {}
    per_request = sum(cpu.get(process, 0.0) for process in CPU_PROCESSES["stack"])
    direct_p50 = direct["latency_ms"]["p50"]
    return {
        "concurrency": concurrency,
        "cores": cores,
        "cpu_ms_per_request": round(per_request, 3),
        "triton_cpu_ms_per_request": round(cpu.get("triton", 0.0), 3),
        "mean_latency_floor_ms": round(concurrency * per_request / cores, 3),
        "mean_latency_ms": stack["latency_ms"].get("mean"),
        "p50_latency_ms": stack["latency_ms"].get("p50"),
        "direct_p50_ms": direct_p50,
        "cpu_budget_for_p50_target_ms": round(cores * (direct_p50 + TARGET_OPEN_LOOP_P50_ADDED_MS) / concurrency, 3),
    }


def open_loop_added(runs: Sequence[dict[str, Any]], metric: str = "latency_ms") -> dict[str, dict[str, float]]:
    """What each front adds over its backend when every target gets the same request rate."""
    by_target = {r["target"]: r.get(metric) or {} for r in runs if r.get("ok")}
    return added_pairs(by_target.get)


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The top-level keys of a run's results file: ratios first (absolute times vary between runs)."""
    runs = results.get("runs", [])
    workers = results["config"]["workers"][0]
    nonstream = overhead(runs, workers, "nonstream")
    stream = overhead(runs, workers, "stream")

    def at_c1(section: dict[str, Any], name: str, key: str) -> float | None:
        return section["added_ms"].get("1", {}).get(name, {}).get(key)

    def at_sat(section: dict[str, Any], name: str, key: str) -> float | None:
        c_sat = str(section["litellm_saturation_concurrency"])
        return section["added_ms"].get(c_sat, {}).get(name, {}).get(key)

    out = {
        "rps_ratio_vs_litellm": nonstream["rps_ratio_vs_litellm"],
        "rps_ratio_vs_litellm_stream": stream["rps_ratio_vs_litellm"],
        "p50_added_ms": at_sat(nonstream, "stack_vs_direct", "p50"),
        "p95_added_ms": at_sat(nonstream, "stack_vs_direct", "p95"),
        "p99_added_ms": at_sat(nonstream, "stack_vs_direct", "p99"),
        "ttft_added_ms_p50": at_sat(stream, "stack_vs_direct", "p50"),
        "ttft_added_ms_p99": at_sat(stream, "stack_vs_direct", "p99"),
        "litellm_p50_added_ms": at_sat(nonstream, "litellm_vs_shim", "p50"),
        "litellm_p99_added_ms": at_sat(nonstream, "litellm_vs_shim", "p99"),
        "added_ms_measured_at_concurrency": nonstream["litellm_saturation_concurrency"],
        "ttft_added_ms_measured_at_concurrency": stream["litellm_saturation_concurrency"],
        "p50_added_ms_c1": at_c1(nonstream, "stack_vs_direct", "p50"),
        "p99_added_ms_c1": at_c1(nonstream, "stack_vs_direct", "p99"),
        # Portkey over its backend at 1 client, the figure the stack's own p50_added_ms_c1 is judged against.
        "rps_ratio_vs_portkey": nonstream["rps_ratio_vs_portkey"],
        "portkey_p50_added_ms": at_c1(nonstream, "portkey_vs_shim", "p50"),
        "portkey_p99_added_ms": at_c1(nonstream, "portkey_vs_shim", "p99"),
        "portkey_p50_added_ms_at_saturation": at_sat(nonstream, "portkey_vs_shim", "p50"),
        "portkey_version": results["meta"]["versions"].get("portkey"),
        "stack_vs_direct_tokens_per_s": (results.get("e2e") or {}).get("stack_vs_direct_tokens_per_s"),
        **_open_loop_headline(results.get("rate") or {}, "open_loop"),
        **_open_loop_headline(results.get("rate_stream") or {}, "open_loop_ttft"),
        **_floor_headline(
            closed_loop_floor(
                runs, workers, nonstream["litellm_saturation_concurrency"], results["meta"]["machine"]["cores"]
            )
        ),
        "litellm_version": results["meta"]["versions"].get("litellm"),
        "litellm_mode": results["meta"].get("litellm_mode"),
        "workers": workers,
        "rps_ratio_vs_litellm_by_workers": {
            str(w): overhead(runs, w, "nonstream")["rps_ratio_vs_litellm"] for w in results["config"]["workers"]
        },
    }
    out["memory_growth_mib_per_10k_max"] = _worst_memory_growth(results.get("memory") or {})
    out["targets_met"] = targets_met(out)
    return out


def targets_met(head: dict[str, Any]) -> dict[str, bool]:
    """Each target of the restated table (issue 27) against the run's headline figures."""

    def at_most(key: str, limit: float) -> bool:
        return head.get(key) is not None and head[key] <= limit

    def at_least(key: str, floor: float) -> bool:
        return head.get(key) is not None and head[key] >= floor

    c1, portkey_c1 = head.get("p50_added_ms_c1"), head.get("portkey_p50_added_ms")
    return {
        "p50_added_c1_at_most_1ms": at_most("p50_added_ms_c1", TARGET_C1_P50_ADDED_MS),
        "p50_added_c1_under_1_5ms": at_most("p50_added_ms_c1", TARGET_C1_P50_ADDED_MS_MIN),
        "p99_added_c1_at_most_4ms": at_most("p99_added_ms_c1", TARGET_C1_P99_ADDED_MS),
        "open_loop_p50_added_at_most_1_5ms": at_most("open_loop_p50_added_ms", TARGET_OPEN_LOOP_P50_ADDED_MS),
        "open_loop_p99_added_at_most_4ms": at_most("open_loop_p99_added_ms", TARGET_OPEN_LOOP_P99_ADDED_MS),
        "rps_at_least_10x_litellm": at_least("rps_ratio_vs_litellm", TARGET_RPS_RATIO),
        "rps_at_least_8x_litellm": at_least("rps_ratio_vs_litellm", TARGET_RPS_RATIO_MIN),
        "cpu_per_request_at_most_1_5ms": at_most("cpu_ms_per_request_at_saturation", TARGET_CPU_MS_PER_REQUEST),
        "rps_at_least_portkeys": at_least("rps_ratio_vs_portkey", TARGET_RPS_RATIO_VS_PORTKEY),
        "p50_added_c1_at_most_portkeys": c1 is not None and portkey_c1 is not None and c1 <= portkey_c1,
        "memory_growth_about_0": at_most("memory_growth_mib_per_10k_max", TARGET_MEMORY_GROWTH_MIB_PER_10K),
    }


def _worst_memory_growth(section: dict[str, Any]) -> float | None:
    """The largest RSS growth per 10,000 requests among the five Lexora services in the memory
    section (Postgres's and Triton's resident memory grows as their caches fill, which is no leak)."""
    stack = {"gateway", "auth", "billing", "usage", "router"}
    growths = [
        entry["rss_growth_mib_per_10k"]
        for name, entry in (section.get("processes") or {}).items()
        if name in stack and entry.get("rss_growth_mib_per_10k") is not None
    ]
    return max(growths) if growths else None


def _open_loop_headline(section: dict[str, Any], prefix: str) -> dict[str, Any]:
    added_ms = section.get("added_ms") or {}
    stack, litellm = added_ms.get("stack_vs_direct", {}), added_ms.get("litellm_vs_shim", {})
    portkey = added_ms.get("portkey_vs_shim", {})
    return {
        f"{prefix}_rate_rps": section.get("rate"),
        f"{prefix}_p50_added_ms": stack.get("p50"),
        f"{prefix}_p99_added_ms": stack.get("p99"),
        f"{prefix}_litellm_p50_added_ms": litellm.get("p50"),
        f"{prefix}_litellm_p99_added_ms": litellm.get("p99"),
        f"{prefix}_portkey_p50_added_ms": portkey.get("p50"),
        f"{prefix}_portkey_p99_added_ms": portkey.get("p99"),
    }


def _floor_headline(floor: dict[str, Any]) -> dict[str, Any]:
    return {
        "cpu_ms_per_request_at_saturation": floor.get("cpu_ms_per_request"),
        "closed_loop_mean_floor_ms": floor.get("mean_latency_floor_ms"),
        "cpu_ms_per_request_budget_for_p50_target": floor.get("cpu_budget_for_p50_target_ms"),
    }


def per_10k(before: float, after: float, requests: int) -> float | None:
    return round((after - before) / requests * 10_000, 2) if requests else None


# ---- markdown ---------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pair(p50: Any, p99: Any) -> str:
    return f"{_fmt(p50, 2)} / {_fmt(p99, 2)}"


def _open_loop_rows(head: dict[str, Any], prefix: str, what: str, unit: str) -> list[list[str]]:
    """The headline's two rows for one open loop (keys from _open_loop_headline with `prefix`)."""
    return [
        [
            f"added {what}p50 / p99 ms over Triton direct, open loop at {_fmt(head.get(f'{prefix}_rate_rps'))} {unit}",
            _pair(head.get(f"{prefix}_p50_added_ms"), head.get(f"{prefix}_p99_added_ms")),
            f"≤ {TARGET_OPEN_LOOP_P50_ADDED_MS:g} / ≤ {TARGET_OPEN_LOOP_P99_ADDED_MS:g}"
            if prefix == "open_loop"
            else "",
        ],
        [
            f"LiteLLM's added {what}p50 / p99 ms over its backend, same rate",
            _pair(head.get(f"{prefix}_litellm_p50_added_ms"), head.get(f"{prefix}_litellm_p99_added_ms")),
            "",
        ],
        [
            f"Portkey's added {what}p50 / p99 ms over its backend, same rate",
            _pair(head.get(f"{prefix}_portkey_p50_added_ms"), head.get(f"{prefix}_portkey_p99_added_ms")),
            "",
        ],
    ]


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return lines


def _sweep_table(runs: Sequence[dict[str, Any]], workers: int, mode: str) -> list[str]:
    metric = metric_of(mode)
    name = "TTFT" if mode == "stream" else "latency"
    rows = []
    for run in sorted(
        (r for r in runs if r.get("workers") == workers and r.get("mode") == mode),
        key=lambda r: (TARGETS.index(r["target"]) if r["target"] in TARGETS else 9, r["concurrency"]),
    ):
        lat = run.get(metric) or {}
        rows.append(
            [
                TARGET_LABELS.get(run["target"], run["target"]),
                str(run["concurrency"]),
                _fmt(run.get("rps")),
                _fmt(lat.get("p50"), 2),
                _fmt(lat.get("p95"), 2),
                _fmt(lat.get("p99"), 2),
                _fmt((run.get("latency_ms") or {}).get("p50"), 2) if mode == "stream" else _fmt(lat.get("max"), 2),
                f"{run.get('ok', 0)}/{run.get('requests', 0)}",
                _fmt(run.get("foreign_cpu_cores"), 2),
            ]
        )
    last = "whole stream p50" if mode == "stream" else "max"
    return _table(
        [
            "target",
            "clients",
            "req/s",
            f"{name} p50 ms",
            f"{name} p95 ms",
            f"{name} p99 ms",
            last,
            "ok/sent",
            "other load (cores)",
        ],
        rows,
    )


def _added_table(section: dict[str, Any]) -> list[str]:
    rows = []
    for concurrency, entry in section["added_ms"].items():
        for name, _, _, label in ADDED_PAIRS:
            if name in entry:
                d = entry[name]
                rows.append([label, concurrency, _fmt(d.get("p50"), 2), _fmt(d.get("p95"), 2), _fmt(d.get("p99"), 2)])
    return _table(["what", "clients", "added p50 ms", "added p95 ms", "added p99 ms"], rows)


def _cpu_table(runs: Sequence[dict[str, Any]], workers: int) -> list[str]:
    rows = []
    for target, processes in CPU_PROCESSES.items():
        candidates = [
            r
            for r in runs
            if r.get("workers") == workers and r.get("target") == target and r.get("mode") == "nonstream"
        ]
        if not candidates:
            continue
        run = max(candidates, key=lambda r: r.get("rps", 0))
        cpu = run.get("cpu_ms_per_request") or {}
        for component in sorted(processes, key=lambda c: -cpu.get(c, 0.0)):
            if component in cpu:
                rows.append([TARGET_LABELS[target], str(run["concurrency"]), component, _fmt(cpu[component], 2)])
        total = sum(cpu.get(c, 0.0) for c in processes)
        rows.append([TARGET_LABELS[target], str(run["concurrency"]), "**total**", f"**{total:.2f}**"])
    return _table(["target (at its peak)", "clients", "process (with children)", "CPU ms per request"], rows)


def _floor_lines(floor: dict[str, Any]) -> list[str]:
    if not floor:
        return []
    c, n, x = floor["concurrency"], floor["cores"], floor["cpu_ms_per_request"]
    return [
        "",
        f"What {n} cores allow at {c} client{'' if c == 1 else 's'}: the stack used {x:.2f} ms of CPU per "
        f"request summed over its processes (Triton's own {floor['triton_cpu_ms_per_request']:.2f} ms and "
        f"the load generator's included), so at most {n} ÷ {x:.2f} requests per ms, and a closed loop of "
        f"{c} waits on average at least {c} × {x:.2f} ÷ {n} = **{floor['mean_latency_floor_ms']:.2f} ms** "
        f"(Little's law); measured: mean {_fmt(floor['mean_latency_ms'], 2)} ms, p50 "
        f"{_fmt(floor['p50_latency_ms'], 2)} ms. For that floor to be within {TARGET_OPEN_LOOP_P50_ADDED_MS:g} ms of "
        f"Triton direct's p50 ({floor['direct_p50_ms']:.2f} ms), everything together may use at most "
        f"{n} × ({floor['direct_p50_ms']:.2f} + {TARGET_OPEN_LOOP_P50_ADDED_MS:g}) ÷ {c} = "
        f"**{floor['cpu_budget_for_p50_target_ms']:.2f} ms** of CPU per request.",
    ]


def _open_loop_lines(section: dict[str, Any]) -> list[str]:
    if not section.get("runs"):
        return []
    stream = section.get("mode") == "stream"
    what = "streaming (time to first token)" if stream else "non-streaming"
    out = [
        "",
        f"### Open loop: every target at {_fmt(section['rate'])} req/s "
        f"({int(section['share_of_litellm_peak'] * 100)}% of LiteLLM's peak), {what}",
        "",
        f"A request is due every 1/{_fmt(section['rate'])} s whatever the answers do (at most "
        f"{section['max_in_flight']} in flight), for {section['duration_s']} s; latency counts from when it was"
        " due if it had to wait for a connection, else from when it was written (python -m bench loadgen --rate).",
        "",
    ]
    # (header, the run's field, the percentile): a stream is judged by its first token, and its
    # whole-stream latency is shown beside it
    columns = (
        [("TTFT p50 ms", "ttft_ms", "p50"), ("TTFT p90 ms", "ttft_ms", "p90"), ("TTFT p99 ms", "ttft_ms", "p99")]
        + [(f"whole stream {k} ms", "latency_ms", k) for k in ("p50", "p99", "max")]
        if stream
        else [("latency p50 ms", "latency_ms", "p50")] + [(f"{k} ms", "latency_ms", k) for k in ("p90", "p99", "max")]
    )
    rows = []
    for run in sorted(section["runs"], key=lambda r: TARGETS.index(r["target"]) if r["target"] in TARGETS else 9):
        rows.append(
            [
                TARGET_LABELS.get(run["target"], run["target"]),
                _fmt(run.get("rps")),
                *(_fmt((run.get(field) or {}).get(k), 2) for _, field, k in columns),
                f"{run.get('ok', 0)}/{run.get('requests', 0)}",
                str(run.get("waited_for_a_connection", 0)),
                _fmt((run.get("client_late_ms") or {}).get("p99"), 2),
                _fmt(run.get("foreign_cpu_cores"), 2),
            ]
        )
    out += _table(
        [
            "target",
            "req/s",
            *(header for header, _, _ in columns),
            "ok/sent",
            "waited for a connection",
            "client late p99 ms",
            "other load (cores)",
        ],
        rows,
    )
    added_rows = [
        [label, _fmt(d.get("p50"), 2), _fmt(d.get("p95"), 2), _fmt(d.get("p99"), 2)]
        for name, _, _, label in ADDED_PAIRS
        if (d := section["added_ms"].get(name))
    ]
    added = "added TTFT" if stream else "added"
    out += ["", f"{'Added time to first token' if stream else 'Added latency'} at that rate:", ""]
    out += _table(["what", f"{added} p50 ms", f"{added} p95 ms", f"{added} p99 ms"], added_rows)
    return out


def render_markdown(results: dict[str, Any]) -> str:
    meta, head, config = results["meta"], results["headline"], results["config"]
    out: list[str] = []
    out.append(f"Run: {meta['started_at']} · mode: {'quick' if config['quick'] else 'full'} · ")
    out[-1] += f"{meta['machine']['cores']} cores ({meta['machine']['cpu_model']}), {meta['machine']['mem_gib']} GiB"
    out.append("")
    out.append(f"### Headline (gateway and LiteLLM with {head['workers']} worker process(es))")
    out.append("")
    c_sat = head["added_ms_measured_at_concurrency"]
    at = f"{c_sat} client" + ("" if c_sat == 1 else "s")
    c_sat_stream = head.get("ttft_added_ms_measured_at_concurrency", c_sat)
    at_stream = f"{c_sat_stream} client" + ("" if c_sat_stream == 1 else "s")
    rows = [
        [
            "Lexora req/s ÷ LiteLLM req/s (non-streaming, peak)",
            _fmt(head["rps_ratio_vs_litellm"], 2),
            f"≥ {TARGET_RPS_RATIO:g} (at least {TARGET_RPS_RATIO_MIN:g})",
        ],
        ["Lexora req/s ÷ LiteLLM req/s (streaming, peak)", _fmt(head["rps_ratio_vs_litellm_stream"], 2), ""],
        [
            "Lexora req/s (billing and usage on) ÷ Portkey req/s (nothing on), non-streaming, peak",
            _fmt(head.get("rps_ratio_vs_portkey"), 2),
            f"≥ {TARGET_RPS_RATIO_VS_PORTKEY:g}",
        ],
        [
            "added p50 / p99 ms over Triton direct (1 client)",
            _pair(head["p50_added_ms_c1"], head["p99_added_ms_c1"]),
            f"≤ {TARGET_C1_P50_ADDED_MS:g} (under {TARGET_C1_P50_ADDED_MS_MIN:g}) / ≤ {TARGET_C1_P99_ADDED_MS:g}",
        ],
        [
            "Portkey's added p50 / p99 ms over its backend (1 client)",
            _pair(head.get("portkey_p50_added_ms"), head.get("portkey_p99_added_ms")),
            "the stack's p50 at or below it",
        ],
        [f"added p50 / p99 ms over Triton direct ({at})", _pair(head["p50_added_ms"], head["p99_added_ms"]), ""],
        [f"added TTFT p50 ms over Triton direct ({at_stream})", _fmt(head["ttft_added_ms_p50"], 2), ""],
        [
            f"LiteLLM's added p50 / p99 ms over its backend ({at})",
            _pair(head["litellm_p50_added_ms"], head["litellm_p99_added_ms"]),
            "",
        ],
        *_open_loop_rows(head, "open_loop", "", "req/s"),
        [
            "CPU ms per request, every process of the stack (at LiteLLM's saturation)",
            _fmt(head.get("cpu_ms_per_request_at_saturation"), 2),
            f"≤ {TARGET_CPU_MS_PER_REQUEST:g}",
        ],
        [
            "largest RSS growth of a Lexora service, MiB per 10,000 requests",
            _fmt(head.get("memory_growth_mib_per_10k_max"), 2),
            "~0",
        ],
    ]
    if head.get("open_loop_ttft_rate_rps"):
        rows += _open_loop_rows(head, "open_loop_ttft", "TTFT ", "streaming req/s")
    rows += [
        ["tokens/s through the stack ÷ directly (SmolLM2)", _fmt(head["stack_vs_direct_tokens_per_s"], 3), ""],
        ["LiteLLM", f"{head['litellm_version']} ({head['litellm_mode']})", ""],
        ["Portkey AI Gateway", str(head.get("portkey_version")), ""],
    ]
    out += _table(["figure", "value", "target"], rows)
    out.append("")
    met = head["targets_met"]
    out.append(
        "Targets met: "
        + ", ".join(f"{k.replace('_', ' ')}: {_fmt(v)}" for k, v in met.items())
        + f'. "Added" latencies are measured at {at}, the lowest concurrency at which LiteLLM '
        f"reaches {int(SATURATION_SHARE * 100)}% of its peak rate ({at_stream} for streaming)."
    )
    out += _floor_lines(closed_loop_floor(results["runs"], head["workers"], c_sat, meta["machine"]["cores"]))
    for workers in config["workers"]:
        for mode, title in (("nonstream", "Non-streaming"), ("stream", "Streaming (time to first token)")):
            section = overhead(results["runs"], workers, mode)
            if not section["peak_rps"]:
                continue
            out += ["", f"### {title}, {workers} worker(s)", ""]
            out += _sweep_table(results["runs"], workers, mode)
            out += ["", f"LiteLLM saturates at {section['litellm_saturation_concurrency']} clients. Added latency:", ""]
            out += _added_table(section)
        out += ["", f"### CPU per request by process ({workers} worker(s), non-streaming, at each target's peak)", ""]
        out += _cpu_table(results["runs"], workers)
        stack_runs = [
            r
            for r in results["runs"]
            if r.get("workers") == workers and r.get("target") == "stack" and "nats_msgs_in_per_request" in r
        ]
        if stack_runs:
            out += ["", "NATS messages per stack request (published in / delivered out), by run: "]
            out[-1] += ", ".join(
                f"{r['mode']} c={r['concurrency']}: "
                f"{r['nats_msgs_in_per_request']:g}/{r['nats_msgs_out_per_request']:g}"
                for r in stack_runs
            )
    out += _open_loop_lines(results.get("rate") or {})
    out += _open_loop_lines(results.get("rate_stream") or {})
    billing = results.get("billing")
    if billing:
        out += ["", "### Billing under load (Postgres)", ""]
        rows = []
        for case in billing.get("cases", []):
            rows.append(
                [
                    case["path"],
                    case["accounts_label"],
                    str(case["concurrency"]),
                    _fmt(case.get("rps")),
                    _fmt(case.get("settle_rps")),
                    _fmt((case.get("reserve_ms") or {}).get("p50"), 2),
                    _fmt((case.get("reserve_ms") or {}).get("p99"), 2),
                    _fmt(case.get("settle_lag_ms_p99"), 1),
                    _fmt(case.get("charged_exactly_once")),
                ]
            )
        out += _table(
            [
                "path",
                "accounts",
                "clients",
                "req/s (over NATS: reserves/s)",
                "settled/s",
                "reserve p50 ms",
                "reserve p99 ms",
                "settle lag p99 ms",
                "each charged once",
            ],
            rows,
        )
    check = results.get("exactly_once")
    if check:
        out += ["", "### Exactly-once check over the whole run", ""]
        out += _table(["check", "result"], [[k, _fmt(v)] for k, v in check.items() if k != "problems"])
        if check.get("problems"):
            out += ["", "Problems: " + "; ".join(check["problems"])]
    hops = results.get("hops")
    if hops and "error" not in hops:
        out += ["", f"### Each hop alone, 1 client ({hops.get('n')} calls each, {hops.get('max_tokens')} tokens)", ""]
        rows = []
        for name, entry in hops.items():
            if isinstance(entry, dict) and "p50" in entry:
                rows.append(
                    [
                        HOP_LABELS.get(name.rsplit("_", 1)[0] if name[-1].isdigit() else name, name),
                        _fmt(entry["p50"], 3),
                        _fmt(entry["p90"], 3),
                        _fmt(entry["p99"], 3),
                        _fmt(entry.get("client_cpu_ms"), 3),
                    ]
                )
        out += _table(["hop", "p50 ms", "p90 ms", "p99 ms", "caller CPU ms"], rows)
    memory = results.get("memory")
    if memory:
        out += ["", f"### Resident memory ({memory['requests']} requests in the long run)", ""]
        rows = []
        for name, entry in memory["processes"].items():
            rows.append(
                [
                    name,
                    _fmt(entry.get("start_rss_mib")),
                    _fmt(entry.get("before_rss_mib")),
                    _fmt(entry.get("after_rss_mib")),
                    _fmt(entry.get("rss_growth_mib_per_10k"), 2),
                    _fmt(entry.get("pss_growth_mib_per_10k"), 2),
                ]
            )
        header = [
            "process (with children)",
            "RSS at start MiB",
            "RSS before MiB",
            "RSS after MiB",
            "RSS growth MiB / 10k req",
            "PSS growth MiB / 10k req",
        ]
        out += _table(header, rows)
        out += [
            "",
            "RSS is each process tree's resident memory. PSS divides shared pages among their sharers: it is"
            " the meaningful figure for Postgres (its backends share the buffer pool), but it also moves when"
            " unrelated processes that map the same libraries start or stop (on a shared machine).",
        ]
    e2e = results.get("e2e")
    if e2e and "direct" in e2e:
        out += ["", f"### End to end on SmolLM2-135M (llama.cpp on CPU, {e2e['max_tokens']} tokens per request)", ""]
        out += _table(
            ["path", "requests", "completion tokens", "tokens/s (best)", "tokens/s (median)"],
            [
                [
                    p,
                    str(e2e[p]["requests"]),
                    ", ".join(str(t) for t in e2e[p]["completion_tokens"]),
                    _fmt(e2e[p]["tokens_per_s_best"], 1),
                    _fmt(e2e[p]["tokens_per_s_median"], 1),
                ]
                for p in ("direct", "stack")
            ],
        )
        out += [
            "",
            f"Stack ÷ direct: **{_fmt(e2e['stack_vs_direct_tokens_per_s'], 3)}** (best), "
            f"{_fmt(e2e.get('stack_vs_direct_tokens_per_s_median'), 3)} (median); "
            f"other load during these requests: {_fmt(e2e.get('foreign_cpu_cores'), 2)} cores.",
        ]
    prof = results.get("profile")
    if prof and "load" in prof:
        load = prof["load"]
        out += [
            "",
            f"### py-spy profiles under load ({load['requests']} requests at {load['concurrency']} clients, "
            f"{_fmt(load['rps'])} req/s while sampled)",
            "",
        ]
        rows = []
        for service, summary in prof.items():
            if service == "load" or "self_by_area" not in summary:
                continue
            for entry in summary["self_by_area"][:6]:
                rows.append(
                    [
                        service,
                        entry["name"],
                        f"{entry['share'] * 100:.1f}%",
                        _fmt(entry.get("ms_per_request"), 3),
                    ]
                )
        out += _table(["service", "area (self time)", "share of its working samples", "≈ CPU ms per request"], rows)
        out += ["", "Full summaries: `bench/results/profiles/<service>.txt`."]
    failed = {k: v["error"] for k, v in results.items() if isinstance(v, dict) and "error" in v}
    if failed:
        out += ["", "### Sections that failed in this run", ""]
        out += [f"- {name}: `{error.splitlines()[-1][:300]}`" for name, error in failed.items()]
    out += ["", "### Versions", ""]
    out += _table(["component", "version"], [[k, str(v)] for k, v in meta["versions"].items()])
    out += ["", "### Commands", "", "```"]
    out += meta.get("commands_sample", [])
    out += ["```"]
    return "\n".join(out) + "\n"
