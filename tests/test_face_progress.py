"""Progress lines of long face runs: counts, rate and ETA (with a stepped clock, not real time)."""

from __future__ import annotations

import numpy as np

from benchmarks.synthetic_faces import synthetic_library
from shared.face_clustering import embedding_matrix, partition
from shared.face_progress import Eta, duration, every_tenth


def test_eta_from_the_rate_so_far() -> None:
    now = [100.0]
    eta = Eta(1000, "faces", clock=lambda: now[0])
    now[0] += 20.0
    assert eta.line(250) == "250/1000 faces, 12.5 faces/s, eta 1m00s"
    now[0] += 60.0
    assert eta.line(1000) == "1000/1000 faces, 12.5 faces/s, eta 0s"
    assert [duration(s) for s in (0.4, 59, 61, 3725)] == ["0s", "59s", "1m01s", "1h02m"]


def test_every_tenth_fires_once_per_tenth_and_at_the_end() -> None:
    due = every_tenth(100)
    fired = [d for d in range(0, 101, 7) if due(d)] + [100 if due(100) else -1]
    assert fired == [14, 21, 35, 42, 56, 63, 70, 84, 91, 100]
    small = every_tenth(3)
    assert [small(d) for d in (1, 2, 3)] == [True, True, True]


def test_clustering_a_large_library_reports_its_progress() -> None:
    lib = synthetic_library(600, seed=6)
    lines: list[str] = []
    partition(
        embedding_matrix(lib.faces),
        np.array([f.photo_id for f in lib.faces]),
        0.42,
        exact_max=100,
        progress=lines.append,
    )
    n = len(lib.faces)
    assert lines[0] == f"clustering {n} faces: searching 32 nearest neighbours each"
    assert lines[1].startswith("neighbours: ") and "components, largest" in lines[1]
    assert lines[-1].startswith(f"clustering: {n}/{n} faces, ") and lines[-1].endswith("eta 0s")
    assert 5 <= len(lines) - 2 <= 10
    # small libraries are clustered in one go, silently
    partition(embedding_matrix(lib.faces[:50]), np.arange(50), 0.42, progress=lines.append)
    assert lines[-1].startswith(f"clustering: {n}/{n}")
