"""End to end on the real model (section `e2e`): SmolLM2-135M (llama.cpp, CPU) tokens/s through
the stack and directly against Triton's HTTP generate, sequential requests in alternating order."""

from __future__ import annotations

import http.client
import json
import time
from typing import TYPE_CHECKING, Any

from bench import log, procstat, report
from bench.settings import E2E_MESSAGES
from lexora_dev.catalog import LOCAL_CHAT_MODEL

if TYPE_CHECKING:
    from bench.gateway_run import GatewayRun


def e2e(bench: GatewayRun, api_key: str) -> dict[str, Any]:
    """SmolLM2 tokens/s through the stack and directly, sequential requests in alternating order.

    llama.cpp runs one thread per core, so anything else on the machine slows it down: the
    figure per path is its best request (interference only ever slows a request down), with
    the median beside it.
    """
    p, m = bench.testbed, bench.settings.e2e_max_tokens
    direct_body = json.dumps(
        {
            "text_input": json.dumps(E2E_MESSAGES),
            "apply_chat_template": True,
            "max_tokens": m,
            "stream": False,
            "temperature": 0.0,
            "top_p": 1.0,
        }
    )
    stack_body = json.dumps(
        {"model": LOCAL_CHAT_MODEL, "messages": E2E_MESSAGES, "max_tokens": m, "temperature": 0, "top_p": 1.0}
    )

    deadline = time.monotonic() + bench.settings.e2e_budget_s

    def left() -> float:
        return deadline - time.monotonic()

    def direct() -> tuple[int, float]:
        path = "/v2/models/smollm2-135m-instruct/generate"
        out, seconds = _post(p.triton_http, path, direct_body, {}, timeout=left())
        return int(out["num_output_tokens"]), seconds

    def via_stack() -> tuple[int, float]:
        headers = {"Authorization": f"Bearer {api_key}"}
        out, seconds = _post(p.gateway_port, "/v1/chat/completions", stack_body, headers, timeout=left())
        return int(out["usage"]["completion_tokens"]), seconds

    direct()
    via_stack()  # warm both paths (and the model's caches)
    rates: dict[str, list[float]] = {"direct": [], "stack": []}
    tokens_seen: dict[str, set[int]] = {"direct": set(), "stack": set()}
    meter = procstat.CpuMeter(p.roots())
    meter.start()
    started = time.monotonic()
    for rep in range(bench.settings.e2e_reps):
        if rep and left() < 0.3 * bench.settings.e2e_budget_s:
            break  # a very busy machine: what was measured stands, with its count
        order = [("direct", direct), ("stack", via_stack)]
        for name, fn in order if rep % 2 == 0 else reversed(order):
            tokens, seconds = fn()
            rates[name].append(tokens / seconds)
            tokens_seen[name].add(tokens)
    cpu = meter.stop()
    out: dict[str, Any] = {}
    for name, values in rates.items():
        out[name] = {
            "requests": len(values),
            "completion_tokens": sorted(tokens_seen[name]),
            "tokens_per_s_best": round(max(values), 2),
            "tokens_per_s_median": round(report.percentile(values, 50), 2),
            "tokens_per_s_each": [round(v, 2) for v in values],
        }
    out["stack_vs_direct_tokens_per_s"] = report.ratio(
        out["stack"]["tokens_per_s_best"], out["direct"]["tokens_per_s_best"]
    )
    out["stack_vs_direct_tokens_per_s_median"] = report.ratio(
        out["stack"]["tokens_per_s_median"], out["direct"]["tokens_per_s_median"]
    )
    out["foreign_cpu_cores"] = round(cpu["foreign"] / (time.monotonic() - started), 2)
    out["max_tokens"] = m
    out["note"] = "sequential non-streaming requests, temperature 0, alternating order; best and median"
    log(
        f"e2e SmolLM2: direct {out['direct']['tokens_per_s_best']} tok/s, "
        f"stack {out['stack']['tokens_per_s_best']} tok/s → {out['stack_vs_direct_tokens_per_s']} "
        f"(medians → {out['stack_vs_direct_tokens_per_s_median']}; other load {out['foreign_cpu_cores']} cores)"
    )
    return out


def _post(
    port: int, path: str, body: str, headers: dict[str, str], timeout: float = 300
) -> tuple[dict[str, Any], float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=max(timeout, 1))
    started = time.perf_counter()
    conn.request("POST", path, body, {"Content-Type": "application/json", **headers})
    response = conn.getresponse()
    data = response.read()
    seconds = time.perf_counter() - started
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"{path} answered {response.status}: {data[:500]!r}")
    return json.loads(data), seconds
