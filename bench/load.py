"""Load from the harness's side: each target's URLs and request bodies, and runs of wrk
(non-streaming closed loops) and `python -m bench loadgen` (streaming, exact counts, fixed rates),
each in its own process, returning the generator's JSON and the command as the results record it."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench import REPO, tools
from bench.settings import FIRST_TOKEN


@dataclass
class Target:
    name: str
    urls: dict[str, str]  # mode -> URL
    bodies: dict[str, Path]  # mode -> body file
    keys_file: Path | None = None
    headers: dict[str, str] | None = None  # sent with every request (Portkey's routing headers)


def run_wrk(target: Target, concurrency: int, duration: int, keys_file: Path | None = None) -> tuple[dict, str]:
    keys = keys_file or target.keys_file
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout", "10s"]
    argv += ["-s", str(tools.WRK_SCRIPT), target.urls["nonstream"]]
    headers = "\n".join(f"{name}: {value}" for name, value in (target.headers or {}).items())
    env = {
        **os.environ,
        "WRK_BODY_FILE": str(target.bodies["nonstream"]),
        "WRK_KEYS_FILE": str(keys or ""),
        "WRK_HEADERS": headers,
    }
    command = f"WRK_BODY_FILE={target.bodies['nonstream']} WRK_KEYS_FILE={keys or ''} "
    command += f"WRK_HEADERS={shlex.quote(headers)} " if headers else ""
    command += shlex.join(argv)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 60)
    if "WRK_JSON" not in done.stdout:
        raise RuntimeError(f"wrk failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return json.loads(done.stdout.split("WRK_JSON", 1)[1].strip().splitlines()[0]), command


def run_loadgen(
    target: Target,
    mode: str,
    concurrency: int,
    duration: float = 0,
    requests: int = 0,
    keys_file: Path | None = None,
    rate: float = 0.0,
) -> tuple[dict, str]:
    """`python -m bench loadgen`: closed loop with `concurrency` clients, or with `rate` an open loop at that
    many requests per second with at most `concurrency` in flight."""
    keys = keys_file or target.keys_file
    argv = tools.argv("loadgen", "--url", target.urls[mode])
    argv += ["--body-file", str(target.bodies[mode]), "--concurrency", str(concurrency)]
    argv += ["--rate", f"{rate:g}"] if rate else []
    argv += ["--requests", str(requests)] if requests else ["--duration", str(duration)]
    if mode == "stream":
        argv += ["--marker", FIRST_TOKEN]
    if keys:
        argv += ["--keys-file", str(keys)]
    for name, value in (target.headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=(duration or 600) + 120, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed: {done.stderr[-2000:]}")
    command = tools.shown(argv)
    return json.loads(done.stdout), command
