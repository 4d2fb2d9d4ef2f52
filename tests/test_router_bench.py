"""`make bench-router` runs end to end on a small count: real Redis, real router processes, no timing."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.router_bench import run


def test_router_bench_turns_every_payload_into_jobs_with_one_and_two_routers(tmp_path: Path) -> None:
    results = run(photos=40, router_counts=[1, 2], repeat=1, env={}, out=tmp_path, timeout_s=120)

    assert [r["routers"] for r in results["runs"]] == [1, 2]
    for r in results["runs"]:
        assert r["complete"], r  # every payload once in a clip, a caption and a face job
        assert r["photos"] == 40 and r["jobs"] >= 3 * 40 // 8
    assert results["ratio_2_to_1"] is not None
    assert "two routers / one" in results["markdown"]
    written = json.loads(next(tmp_path.glob("results-router-*.json")).read_text())
    assert written["best"].keys() == {"1", "2"}
