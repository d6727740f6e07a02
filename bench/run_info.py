"""What a run records about itself beside its figures: the versions of everything measured, the
code it ran (git commit, uncommitted service files), one command of each kind it ran."""

from __future__ import annotations

import json
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from bench import BENCH, REPO
from bench.testbed import LITELLM_VENV
from lexora_dev import stack
from lexora_dev.triton_server import tritonserver_binary


def sample_commands(commands: list[str], state: Path) -> list[str]:
    """One command of each kind, paths relative to the repository (the rest differ only in the
    client concurrency and the ports)."""
    seen, out = set(), []
    for command in commands:
        command = command.replace(str(state) + "/", "$STATE/").replace(str(BENCH) + "/", "bench/")
        command = command.replace(str(REPO) + "/", "")
        key = re.sub(r"-c\d+|--concurrency \d+|127\.0\.0\.1:\d+|--pid \d+", "", command)
        if key not in seen:
            seen.add(key)
            out.append(command)
    return out


def versions(postgres: str) -> dict[str, str]:
    """Every component's version; `postgres` is what the running server says."""

    def run(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        except Exception as exc:
            return f"unknown ({type(exc).__name__})"

    from importlib.metadata import PackageNotFoundError, version

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    litellm_py = LITELLM_VENV / "bin" / "python"
    litellm_version = run([str(litellm_py), "-c", "from importlib.metadata import version; print(version('litellm'))"])
    return {
        "litellm": litellm_version,
        "portkey": _portkey_version(),
        "python": platform.python_version(),
        "lexora": pkg("lexora"),
        "tritonserver (nvidia-pytriton)": f"{pkg('nvidia-pytriton')} ({tritonserver_binary().parent.parent.name})",
        "nats-server": run([stack.nats_server_binary(), "--version"]),
        "postgres": postgres,
        "wrk": run(["wrk", "--version"]).split(" [")[0],
        "uvicorn": pkg("uvicorn"),
        "fastapi": pkg("fastapi"),
        "nats-py": pkg("nats-py"),
        "tritonclient": pkg("tritonclient"),
        "llama-cpp-python": pkg("llama_cpp_python"),
    }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    dirty = [line[3:] for line in git("status", "--porcelain").splitlines() if line[3:].startswith("services/")]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_service_files": dirty}


def _portkey_version() -> str:
    """The installed @portkey-ai/gateway's version (bench/setup.sh installs the pinned one)."""
    manifest = BENCH / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "not installed"
