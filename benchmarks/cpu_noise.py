"""How much of the machine other work took while we measured, and waiting for a quiet moment.

The benchmark shares its cores with whatever else runs. Over a measurement window, all CPU time spent on
the machine (/proc/stat) minus the CPU time of our own processes (/proc/<pid>/stat: the processes under
test, Redis, and this harness with its gallery thread) is the time others took: reported as a share of
the machine, so a noisy measurement is visible as such next to its number.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds spent on anything but idle/iowait since boot, all cores together."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICK


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class CpuSnapshot:
    """Machine busy time, our processes' CPU time and wall time at one instant."""

    at: float
    busy: float
    ours: dict[int, float]


def snapshot(pids: Iterable[int]) -> CpuSnapshot:
    pids = {*pids, os.getpid()}
    return CpuSnapshot(time.monotonic(), machine_busy_s(), {p: process_cpu_s(p) for p in pids})


def foreign_share(start: CpuSnapshot, end: CpuSnapshot) -> float:
    """Share of all cores (0..1) that processes other than ours used between the two snapshots."""
    wall = end.at - start.at
    if wall <= 0:
        return 0.0
    ours = sum(end.ours.get(p, 0.0) - start.ours.get(p, 0.0) for p in start.ours)
    foreign = max(0.0, (end.busy - start.busy) - ours)
    return round(foreign / (wall * len(os.sched_getaffinity(0))), 3)


def wait_for_quiet(max_share: float, timeout_s: float, window_s: float = 2.0) -> float:
    """Wait until others use under `max_share` of the machine over `window_s` (or `timeout_s` passes).

    Returns the share measured last, so the report can say how quiet it really was.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        start = snapshot([])
        time.sleep(window_s)
        share = foreign_share(start, snapshot([]))
        if share <= max_share or time.monotonic() >= deadline:
            return share
