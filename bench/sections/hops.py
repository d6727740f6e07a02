"""Each hop alone (section `hops`): `python -m bench hops` (bench.tools.hop_probe) times every hop of
the request path at one client against the running testbed, from a NATS request/reply to a whole
request through the gateway."""

from __future__ import annotations

import json
import subprocess
import time
from typing import TYPE_CHECKING, Any

from bench import REPO, log, procstat, tools
from bench.settings import INSTANT_MODEL

if TYPE_CHECKING:
    from bench.gateway_run import GatewayRun


def hops(bench: GatewayRun) -> dict[str, Any]:
    p = bench.testbed
    argv = tools.argv("hops", "--nats-url", p.nats_url, "--triton-grpc", p.triton_grpc)
    argv += ["--triton-http", str(p.triton_http), "--gateway-port", str(p.gateway_port)]
    argv += ["--account", bench.hot[0], "--api-key", bench.hot[1], "--model", INSTANT_MODEL]
    argv += ["--max-tokens", str(bench.settings.max_tokens), "-n", str(bench.settings.hops_n)]
    meter = procstat.CpuMeter(p.roots())
    meter.start()
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO)
    cpu = meter.stop()
    if done.returncode != 0:
        log(f"hops failed: {done.stderr[-1500:]}")
        return {"error": done.stderr[-1500:]}
    out = json.loads(done.stdout)
    out["foreign_cpu_cores"] = round(cpu["foreign"] / (time.monotonic() - started), 2)
    bench.commands.append(tools.shown(argv).replace(bench.hot[1], "$KEY"))
    log(
        "hops p50 ms: " + ", ".join(f"{k} {v['p50']:.2f}" for k, v in out.items() if isinstance(v, dict) and "p50" in v)
    )
    return out
