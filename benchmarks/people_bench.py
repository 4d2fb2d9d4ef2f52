"""`python -m benchmarks.people_bench` (`make bench-people`): people clustering at library scale.

Each measurement runs in a child process of its own, so its peak RSS is its own: the child builds the
synthetic library (benchmarks/synthetic_faces.py), resets the kernel's high-water mark
(/proc/self/clear_refs), clusters, and reports wall time, CPU time, peak RSS during clustering (the
input faces held in memory included) and pairwise precision / recall / F1 against the known
identities. `--reference-max` bounds the sizes at which today's dense agglomerative clustering also
runs (its memory is quadratic). The incremental measurement builds and saves the state
of a library, then a fresh process loads it, adds the faces of the newest photos and saves it again,
which is what `mindsight albums` does after an upload. Prints a markdown table; `--out` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.synthetic_faces import labels_of, pairwise_scores, synthetic_library

THRESHOLD = 0.42
"""insightface's default FACE_DISTANCE_THRESHOLD: the embeddings are ArcFace-shaped."""


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s() -> float:
    """CPU seconds of this process, all threads (faiss' OpenMP ones included): load-independent."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure_cluster(n: int, mode: str, seed: int) -> dict[str, Any]:
    from shared.face_clustering import EXACT_MAX, embedding_matrix, partition

    lib = synthetic_library(n, seed=seed)
    faces = lib.faces
    _reset_peak()
    start, cpu = time.perf_counter(), _cpu_s()
    exact_max = 10**9 if mode == "reference" else EXACT_MAX
    groups = partition(
        embedding_matrix(faces, np.float64 if mode == "reference" else np.float32),
        np.array([f.photo_id for f in faces]),
        THRESHOLD,
        exact_max=exact_max,
    )
    seconds = time.perf_counter() - start
    precision, recall, f1 = pairwise_scores(labels_of(groups, len(faces)), lib.identities)
    return {
        "mode": mode,
        "faces": len(faces),
        "people_true": int(np.unique(lib.identities).size),
        "groups": len(groups),
        "seconds": round(seconds, 2),
        "cpu_s": round(_cpu_s() - cpu, 1),
        "peak_rss_mb": round(_peak_mb()),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


def _build_state(n: int, new: int, seed: int, folder: Path) -> dict[str, Any]:
    from services.people_incremental import update_people
    from services.people_state import PeopleState, save_state

    lib = synthetic_library(n, seed=seed)
    photos = np.array([f.photo_id for f in lib.faces])
    # the newest photos (highest ids) holding about `new` faces
    newest = np.unique(photos)[::-1]
    held = np.cumsum(np.bincount(photos)[newest])
    last = int(newest[min(int(np.searchsorted(held, new)), len(newest) - 1)])
    old = [f for f in lib.faces if f.photo_id < last]
    fresh = [f for f in lib.faces if f.photo_id >= last]
    state = PeopleState("bench")
    start = time.perf_counter()
    update_people(state, old, THRESHOLD, min_faces=2)
    seconds = time.perf_counter() - start
    state.scanned = {int(p) for p in np.unique(photos[photos < last])}
    save_state(folder, state)
    np.savez(
        folder / "new_faces.npz",
        emb=np.stack([f.embedding for f in fresh]),
        photos=np.array([f.photo_id for f in fresh]),
    )
    return {
        "faces": len(old),
        "people": len(state.people),
        "pool": len(state.pool),
        "seconds": round(seconds, 2),
    }


def _measure_incremental(folder: Path) -> dict[str, Any]:
    from services.people_incremental import update_people
    from services.people_state import load_state, save_state
    from shared.face_clustering import FaceRecord

    start, cpu = time.perf_counter(), _cpu_s()
    state = load_state(folder, "bench")
    known = len(state.people)
    with np.load(folder / "new_faces.npz") as arrays:
        faces = [
            FaceRecord(int(p), (0.0, 0.0, 100.0, 100.0), 0.99, e)
            for p, e in zip(arrays["photos"], arrays["emb"], strict=True)
        ]
    update = update_people(state, faces, THRESHOLD, min_faces=2)
    save_state(folder, state)
    return {
        "mode": "incremental",
        "new_faces": len(faces),
        "people_known": known,
        "joined_known": update.assigned_faces,
        "people_grown": len(update.grown),
        "clustered": update.clustered_faces,
        "people_new": len(update.created),
        "seconds": round(time.perf_counter() - start, 2),
        "cpu_s": round(_cpu_s() - cpu, 1),
        "peak_rss_mb": round(_peak_mb()),
    }


def _child(args: list[str]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its last stdout line is the JSON result."""
    cmd = [sys.executable, "-m", "benchmarks.people_bench", "--child", *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| faces | method | wall s | CPU s | peak RSS MB | groups | precision | recall | F1 |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r["mode"] == "incremental":
            lines.append(
                f"| +{r['new_faces']} into {r['people_known']} people | incremental | {r['seconds']} | "
                f"{r['cpu_s']} | {r['peak_rss_mb']} | {r['people_new']} new, {r['people_grown']} grown |"
                " | | |"
            )
        else:
            lines.append(
                f"| {r['faces']} | {r['mode']} | {r['seconds']} | {r['cpu_s']} | {r['peak_rss_mb']} | "
                f"{r['groups']} | {r['precision']} | {r['recall']} | {r['f1']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,200000", help="library sizes in faces")
    parser.add_argument(
        "--reference-max", type=int, default=10000, help="largest size for the dense reference"
    )
    parser.add_argument("--incremental", default="200000:1000", help="LIBRARY:NEW faces, or '' to skip")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.child:
        kind, *rest = opts.child
        if kind == "cluster":
            result = _measure_cluster(int(rest[0]), rest[1], opts.seed)
        elif kind == "state":
            result = _build_state(int(rest[0]), int(rest[1]), opts.seed, Path(rest[2]))
        else:
            result = _measure_incremental(Path(rest[0]))
        print(json.dumps(result))
        return 0
    rows: list[dict[str, Any]] = []
    for n in (int(s) for s in opts.sizes.split(",") if s):
        modes = ["graph", "reference"] if n <= opts.reference_max else ["graph"]
        for mode in modes:
            rows.append(_child(["cluster", str(n), mode, "--seed", str(opts.seed)]))
            print(json.dumps(rows[-1]), flush=True)
    if opts.incremental:
        library, new = (int(x) for x in opts.incremental.split(":"))
        with tempfile.TemporaryDirectory() as tmp:
            built = _child(["state", str(library), str(new), tmp, "--seed", str(opts.seed)])
            print(json.dumps({"state": built}), flush=True)
            rows.append(_child(["incremental", tmp]))
            print(json.dumps(rows[-1]), flush=True)
    print(_table(rows))
    if opts.out:
        opts.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
