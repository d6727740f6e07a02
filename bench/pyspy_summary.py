"""Summaries of py-spy's collapsed stacks ("frame;frame;frame count" per line).

For each service: where its working samples fall (threads waiting for work are left out), by
area (a coarse grouping by module path: HTTP server, pydantic, NATS client, gRPC, SQLAlchemy,
asyncpg, ...) and by function, plus the inclusive share of the request path's own functions.
Multiplied by the CPU per request measured without the profiler (py-spy itself slows the
services), the shares become milliseconds of CPU per request.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")

# First match wins; matched against the frame's file path.
AREAS: tuple[tuple[str, str], ...] = (
    ("lexora_gateway/", "lexora gateway code"),
    ("lexora_router/", "lexora router code"),
    ("lexora_billing/", "lexora billing code"),
    ("lexora_usage/", "lexora usage code"),
    ("lexora_auth/", "lexora auth code"),
    ("lexora_runtime/logs", "logging (lexora JSON formatter)"),
    ("lexora_runtime/", "lexora runtime (bus, service)"),
    ("lexora_contracts/", "lexora contracts"),
    ("logging/", "logging (stdlib)"),
    ("prometheus_client/", "prometheus metrics"),
    ("uvicorn/", "uvicorn (HTTP server)"),
    ("httptools", "uvicorn (HTTP server)"),
    ("starlette/", "starlette (routing, responses)"),
    ("fastapi/", "fastapi (routing, dependencies)"),
    ("pydantic", "pydantic (validation, JSON)"),
    ("nats/js/", "nats-py JetStream"),
    ("nats/micro/", "nats-py micro services"),
    ("nats/", "nats-py client"),
    ("tritonclient/", "tritonclient (request/response building)"),
    ("aiohttp/", "aiohttp (HTTP client to Triton)"),
    ("yarl/", "aiohttp (HTTP client to Triton)"),
    ("multidict/", "aiohttp (HTTP client to Triton)"),
    ("grpc/", "grpc aio"),
    ("google/protobuf", "protobuf"),
    ("numpy/", "numpy"),
    ("sqlalchemy/", "SQLAlchemy (statement building, pool, results)"),
    ("asyncpg/", "asyncpg"),
    ("anyio/", "anyio"),
    ("asyncio/", "asyncio"),
    ("uvloop", "asyncio"),
    ("json/", "json (stdlib)"),
    ("orjson", "orjson"),
    ("uuid", "uuid"),
    ("hashlib", "hashlib"),
)


def parse_frame(frame: str) -> tuple[str, str]:
    """(function, file) of one frame as py-spy prints it: 'func (path/to/file.py:123)'."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    return match.group("func"), match.group("file")


def area_of(file: str) -> str:
    for needle, area in AREAS:
        if needle in file:
            return area
    return "other"


def _short(func: str, file: str) -> str:
    parts = file.split("site-packages/")[-1].split("/services/")[-1]
    return f"{func} ({parts})"


# Top frames of a thread that is waiting, not working: left out of the shares.
IDLE_TOP = ("Condition.wait (", "select (selectors.py", "Queue.get (queue.py", "serve_forever (socketserver.py")
# Frames every sample of a service passes through: their inclusive share says nothing.
OUTER = ("<module> (", "main (lexora_", "run_until_stopped (", "_run (lexora_runtime")
# Self time of these frames is C code running under them, named by what it is.
C_SELF = {
    "Runner.run (asyncio/runners.py)": "event loop in C (uvloop: epoll, socket reads, callbacks)",
    "StreamWriter.writelines (asyncio/streams.py)": "socket writes (NATS client flushes, one per publish)",
    "Thread.run (threading.py)": "C thread without Python frames (grpc poller)",
}
# Inclusive shares reported for these (the request path's own functions and key entry points).
KEY_FUNCTIONS = (
    "lexora_",
    "solve_dependencies",
    "run_in_threadpool",
    "writelines (nats/aio/transport.py)",
    "Client.request (nats",
    "JetStreamContext.publish",
    "greenlet_spawn",
    "Connection.execute (sqlalchemy",
    "as_numpy",
    "stream_infer",
)


def summarize_collapsed(text: str, top: int = 25) -> dict[str, Any]:
    """Shares of a service's working samples (idle threads left out): self time by area and by
    function, and inclusive time of the request path's functions."""
    total = idle = 0
    self_fn: Counter[str] = Counter()
    self_area: Counter[str] = Counter()
    incl_key: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [parse_frame(f) for f in stack.split(";") if f]
        # py-spy prefixes a process frame ("process 123:...") when sampling subprocesses.
        frames = [(fn, fl) for fn, fl in frames if fl or not fn.startswith("process ")]
        if not frames:
            continue
        func, file = frames[-1]
        top_name = _short(func, file)
        if any(marker in top_name for marker in IDLE_TOP):
            idle += count
            continue
        total += count
        self_fn[top_name] += count
        self_area[C_SELF.get(top_name) or area_of(file)] += count
        for name in {_short(fn, fl) for fn, fl in frames}:
            if any(k in name for k in KEY_FUNCTIONS) and not name.startswith(OUTER):
                incl_key[name] += count

    def share(counter: Counter[str], limit: int) -> list[dict[str, Any]]:
        return [
            {"name": name, "samples": n, "share": round(n / total, 4) if total else 0.0}
            for name, n in counter.most_common(limit)
        ]

    return {
        "samples": total,
        "idle_samples": idle,
        "self_by_area": share(self_area, 40),
        "self_by_function": share(self_fn, top),
        "inclusive_key_functions": share(incl_key, 40),
    }


def with_cpu(summary: dict[str, Any], cpu_ms_per_request: float | None) -> dict[str, Any]:
    """Spread a measured CPU cost per request (from an unprofiled run) over the sampled shares."""
    if cpu_ms_per_request:
        summary["cpu_ms_per_request"] = cpu_ms_per_request
        for key in ("self_by_area", "inclusive_key_functions"):
            for entry in summary[key]:
                entry["ms_per_request"] = round(entry["share"] * cpu_ms_per_request, 3)
    return summary


def render_text(name: str, summary: dict[str, Any]) -> str:
    lines = [
        f"py-spy profile of {name}: {summary['samples']} working samples ({summary['idle_samples']} idle left out)"
    ]
    if "cpu_ms_per_request" in summary:
        lines.append(f"measured CPU per request (unprofiled run): {summary['cpu_ms_per_request']} ms")
    for title, key in (
        ("self time by area", "self_by_area"),
        ("self time by function", "self_by_function"),
        ("inclusive time of the request path's functions", "inclusive_key_functions"),
    ):
        lines += ["", title + ":"]
        for entry in summary[key]:
            extra = f"  ~{entry['ms_per_request']:.3f} ms/req" if "ms_per_request" in entry else ""
            lines.append(f"  {entry['share'] * 100:5.1f}%  {entry['name']}{extra}")
    return "\n".join(lines) + "\n"
