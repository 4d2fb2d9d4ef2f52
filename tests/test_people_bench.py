"""The people benchmark harness end to end on a tiny library: every child runs and reports; no timing."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.people_bench import main


def test_people_bench_runs_every_measurement(tmp_path: Path) -> None:
    out = tmp_path / "people.json"
    assert (
        main(["--sizes", "600", "--reference-max", "600", "--incremental", "900:40", "--out", str(out)]) == 0
    )
    rows = json.loads(out.read_text())
    assert [r["mode"] for r in rows] == ["graph", "reference", "incremental"]
    graph, reference, incremental = rows
    # below EXACT_MAX both run the dense algorithm: the same people
    assert graph["groups"] == reference["groups"] and graph["f1"] == reference["f1"] > 0.9
    assert all(r["peak_rss_mb"] > 0 for r in rows)
    assert incremental["new_faces"] >= 40 and incremental["people_known"] > 0
    assert incremental["joined_known"] + incremental["clustered"] >= incremental["new_faces"]
