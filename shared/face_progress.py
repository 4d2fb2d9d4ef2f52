"""Progress lines with counts and an ETA for long face runs (scanning photos, clustering a library)."""

from __future__ import annotations

import time
from collections.abc import Callable

Progress = Callable[[str], None]


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `1h02m`: short enough for a progress line."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Eta:
    """Counts `done` of `total` items since creation; `line()` says how far, how fast and how long left."""

    def __init__(self, total: int, unit: str, clock: Callable[[], float] = time.perf_counter) -> None:
        self.total, self.unit, self._clock = total, unit, clock
        self._start = clock()

    def line(self, done: int) -> str:
        elapsed = max(self._clock() - self._start, 1e-9)
        rate = done / elapsed
        left = (self.total - done) / rate if rate > 0 else 0.0
        return f"{done}/{self.total} {self.unit}, {rate:.1f} {self.unit}/s, eta {duration(left)}"


def every_tenth(total: int) -> Callable[[int], bool]:
    """A predicate true when `done` first reaches each tenth of `total` (and at the end)."""
    marks = iter(sorted({max(1, total * k // 10) for k in range(1, 11)}))
    nxt = [next(marks, total)]

    def due(done: int) -> bool:
        if done < nxt[0]:
            return False
        while nxt[0] <= done and nxt[0] < total:
            nxt[0] = next(marks, total)
        return True

    return due
