"""`lexora dev` restarts a process that dies, as a kubelet would: real processes, a fake clock."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from lexora_dev.processes import ManagedProcess
from lexora_dev.supervision import Backoff, Supervisor


def test_the_backoff_doubles_to_its_cap() -> None:
    backoff = Backoff()
    assert [backoff.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def wait_dead(process: ManagedProcess) -> None:
    deadline = time.monotonic() + 10
    while process.alive and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not process.alive


def test_a_killed_service_is_started_again_after_its_backoff(tmp_path: Path) -> None:
    now = [1000.0]
    said: list[str] = []
    billing = ManagedProcess("billing", [sys.executable, "-c", "import time; time.sleep(120)"], tmp_path / "b.log")
    usage = ManagedProcess("usage", [sys.executable, "-c", "import time; time.sleep(120)"], tmp_path / "u.log")
    supervisor = Supervisor([billing.start(), usage.start()], said.append, clock=lambda: now[0])
    try:
        first_pid = billing.proc.pid
        os.kill(first_pid, signal.SIGKILL)  # kill -9, as the reliability issue tried
        wait_dead(billing)
        supervisor.tick()
        assert not billing.alive and "billing exited (code -9)" in said[0] and "again in 1 s" in said[0]
        now[0] += 1
        supervisor.tick()
        assert billing.alive and billing.proc.pid != first_pid and said[-1] == "billing started again"
        assert usage.alive and supervisor.restarts == 1, "the others are left alone"

        os.kill(billing.proc.pid, signal.SIGKILL)  # crashing again at once: the wait doubles
        wait_dead(billing)
        now[0] += 0.5
        supervisor.tick()
        assert "again in 2 s" in said[-1]
        now[0] += 1.9
        supervisor.tick()
        assert not billing.alive
        now[0] += 0.1
        supervisor.tick()
        assert billing.alive

        now[0] += 600  # a long healthy run: the next crash waits the first delay again
        os.kill(billing.proc.pid, signal.SIGKILL)
        wait_dead(billing)
        supervisor.tick()
        assert "again in 1 s" in said[-1]
    finally:
        billing.stop(timeout=1)
        usage.stop(timeout=1)
