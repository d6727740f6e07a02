"""Restarting what `lexora dev` runs, as a kubelet restarts a pod's containers: a process that exits
is started again after a back-off that doubles from 1 s to 30 s while it keeps failing, and starts
over once it has run for a minute. One crashed service (a `kill -9` of billing) no longer stops the
whole local stack."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lexora_dev.processes import ManagedProcess


@dataclass(frozen=True)
class Backoff:
    first_s: float = 1.0
    max_s: float = 30.0
    reset_after_s: float = 60.0  # a run this long counts as healthy: the next crash waits first_s

    def delay(self, failures: int) -> float:
        """The wait before start number `failures` (1 for the first restart) of a crashing process."""
        return min(self.first_s * 2 ** max(failures - 1, 0), self.max_s)


@dataclass
class _Watched:
    process: ManagedProcess
    started_at: float
    failures: int = 0  # consecutive crashes without a healthy run between them
    restart_at: float | None = None  # set while the process is down


@dataclass
class Supervisor:
    processes: list[ManagedProcess]
    say: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    backoff: Backoff = field(default_factory=Backoff)
    restarts: int = 0

    def __post_init__(self) -> None:
        now = self.clock()
        self._watched = [_Watched(p, now) for p in self.processes]

    def tick(self) -> None:
        """Notice processes that exited and start those whose back-off has passed; call it often."""
        now = self.clock()
        for watched in self._watched:
            process = watched.process
            if process.alive:
                continue
            if watched.restart_at is None:
                ran = now - watched.started_at
                watched.failures = 1 if ran >= self.backoff.reset_after_s else watched.failures + 1
                wait = self.backoff.delay(watched.failures)
                watched.restart_at = now + wait
                code = process.proc.returncode if process.proc is not None else None
                self.say(
                    f"{process.name} exited (code {code}) after {ran:.0f} s; starting it again in {wait:g} s. "
                    f"Its log:\n{process.log_tail(8)}"
                )
            if now >= watched.restart_at:
                process.kill()  # stragglers in its process group
                process.start()
                watched.started_at, watched.restart_at = now, None
                self.restarts += 1
                self.say(f"{process.name} started again")
