"""The processes behind a local tritonserver, for tests that break an engine on purpose."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from lexora_dev import stack
from lexora_dev.processes import ManagedProcess

STUB = "triton_python_backend_stub"


def python_stubs(triton: ManagedProcess, model: str) -> list[int]:
    """The pids of `model`'s Python-backend stubs: children of this tritonserver (other tests'
    servers may run beside it) whose command line names one of the model's instances."""
    assert triton.proc is not None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        instance = f"{model}_".encode()
        if parent == triton.proc.pid and argv[0].endswith(STUB.encode()) and any(instance in a for a in argv):
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def supervised_triton(state_dir: Path, model_repo: Path = stack.MODEL_REPO) -> Iterator[stack.SupervisedTriton]:
    """A tritonserver kept running as `lexora dev` keeps it: started again if it exits."""
    triton = stack.SupervisedTriton(state_dir, model_repo)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5):
            triton.keep_alive()

    watcher = threading.Thread(target=watch, name="triton-keeper", daemon=True)
    watcher.start()
    try:
        yield triton
    finally:
        stop.set()
        watcher.join()
        triton.stop()
