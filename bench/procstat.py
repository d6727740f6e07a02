"""CPU time and resident memory of process trees, and the machine's busy time, from /proc.

Used to attribute CPU per request to each service, to see how much of the machine something
outside the benchmark was using during a run (other work on a shared box skews results), and to
measure each service's resident memory before and after a long run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    cpu_ticks: int  # utime + stime + cutime + cstime (reaped children included)
    rss_pages: int


def _read_stat(pid: int) -> ProcInfo | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime..cstime are fields 14..17, rss is field 24.
    return ProcInfo(
        pid=pid,
        ppid=int(fields[1]),
        cpu_ticks=int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14]),
        rss_pages=int(fields[21]),
    )


def snapshot() -> dict[int, ProcInfo]:
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _read_stat(int(entry))
            if info is not None:
                procs[info.pid] = info
    return procs


def tree(root: int, procs: dict[int, ProcInfo]) -> list[int]:
    """`root` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for info in procs.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            found.append(pid)
            todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(root: int, procs: dict[int, ProcInfo]) -> float:
    return sum(procs[pid].cpu_ticks for pid in tree(root, procs)) / CLK_TCK


def rss_mib(root: int, procs: dict[int, ProcInfo]) -> float:
    return sum(procs[pid].rss_pages for pid in tree(root, procs)) * PAGE_SIZE / 2**20


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle, over all cores, since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


class CpuMeter:
    """CPU seconds per named process tree (plus the machine's total) between start() and stop()."""

    def __init__(self, roots: dict[str, int], self_pid: int | None = None):
        self.roots = roots
        self.self_pid = self_pid or os.getpid()

    def _sample(self) -> tuple[dict[str, float], float, float]:
        procs = snapshot()
        per = {name: cpu_seconds(pid, procs) for name, pid in self.roots.items()}
        # The harness and its reaped children (wrk, the load generator) count as the client.
        me = os.times()
        client = me.user + me.system + me.children_user + me.children_system
        return per, client, machine_busy_seconds()

    def start(self) -> None:
        self._before = self._sample()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        per_before, client_before, busy_before = self._before
        per_after, client_after, busy_after = after
        out = {name: max(per_after[name] - per_before.get(name, 0.0), 0.0) for name in per_after}
        out["client"] = max(client_after - client_before, 0.0)
        out["machine_busy"] = max(busy_after - busy_before, 0.0)
        ours = sum(v for k, v in out.items() if k != "machine_busy")
        out["foreign"] = max(out["machine_busy"] - ours, 0.0)
        return out


def pss_mib(root: int, procs: dict[int, ProcInfo]) -> float:
    """Proportional set size of a process tree: resident pages, shared ones divided among their
    sharers, so a tree's total does not count e.g. Postgres' shared buffers once per backend."""
    total_kib = 0
    for pid in tree(root, procs):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
                    break
        except OSError:
            continue
    return total_kib / 1024
