"""Memory (section `memory`): RSS and PSS of each process tree at start, before and after a long
run of non-streaming load through the stack (100,000 requests; 10,000 quick), as growth per 10,000
requests."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from bench import log, report
from bench.db_checks import Db
from bench.load import Target, run_loadgen

if TYPE_CHECKING:
    from bench.gateway_run import GatewayRun


def memory(bench: GatewayRun, targets: dict[str, Target], db: Db, start: dict[str, dict[str, float]]) -> dict[str, Any]:
    db.wait_settled()
    time.sleep(1.0)
    before = bench.testbed.memory()
    raw, command = run_loadgen(
        targets["stack"], "nonstream", bench.settings.memory_concurrency, requests=bench.settings.memory_requests
    )
    bench.commands.append(command)
    db.wait_settled()
    time.sleep(1.0)
    after = bench.testbed.memory()
    n = raw["ok"]
    processes = {}
    for name, b in before.items():
        a = after.get(name, b)
        processes[name] = {
            "start_rss_mib": start.get(name, {}).get("rss"),
            "before_rss_mib": b["rss"],
            "after_rss_mib": a["rss"],
            "rss_growth_mib_per_10k": report.per_10k(b["rss"], a["rss"], n),
            "before_pss_mib": b["pss"],
            "after_pss_mib": a["pss"],
            "pss_growth_mib_per_10k": report.per_10k(b["pss"], a["pss"], n),
        }
    log(
        f"memory: {n} requests at {raw['rps']:.0f} req/s; RSS growth per 10k: "
        + ", ".join(f"{k} {v['rss_growth_mib_per_10k']}" for k, v in processes.items())
    )
    return {
        "requests": n,
        "errors": raw["errors"],
        "rps": round(raw["rps"], 1),
        "processes": processes,
        "command": command,
    }
