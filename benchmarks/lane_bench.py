"""`python -m benchmarks.run --lanes`: fresh uploads during a bulk burst, with lanes and without.

The same run measures three things on ours (router + approach 3's clip workers, torch: no ONNX export):
- idle: single uploads pushed one at a time on an empty pipeline (LPUSH -> callback);
- lanes: a burst of --bulk photos pushed on the bulk list (photo_tasks_bulk), then fresh uploads pushed
  one at a time on photo_tasks, spread over the expected burst time;
- no lanes: the same burst pushed on photo_tasks (as a backend without lanes does), the same uploads
  after it on the same schedule: they wait behind the burst.
The target (issue 11): with lanes, the uploads' p95 <= idle p95 + one bulk batch's time, where one bulk
batch's time is how long one worker takes for MINDSIGHT_BULK_BATCH_SIZE photos during the burst
(batch size x workers / the burst's photos per second): an upload arriving just after every worker took
a bulk batch waits that long.
Every photo is registered under its own name (copies of a few generated files), so the worker's decode
cache never serves a timed photo.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import TYPE_CHECKING, Any

from benchmarks.approaches import parse_approach
from benchmarks.photos import SIZES, ensure_photos
from benchmarks.pipeline_bench import PhotoSet
from benchmarks.processes import ProcessGroup
from benchmarks.report import md_table

if TYPE_CHECKING:
    from benchmarks.run import Options
    from benchmarks.session import BenchSession

LANE_FILES = 16
"""Distinct generated files the burst photos are copies of."""

UPLOADS = 12
"""Fresh uploads timed per mode (and idle)."""

BULK_BATCH = 32
"""MINDSIGHT_BULK_BATCH_SIZE for the run, unless --set says otherwise."""

SPREAD = 0.7
"""The uploads are spread over this share of the burst's expected duration, so all land inside it."""


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered) + 0.5) - 1))]


class LaneBench:
    """One router and one clip worker per mode; photos registered once per mode (fresh names)."""

    def __init__(self, session: BenchSession, opts: Options) -> None:
        self.session = session
        self.bench = session.bench
        self.size = opts.sizes[0]
        self.bulk_n = opts.bulk
        self.env = {"MINDSIGHT_BULK_BATCH_SIZE": str(BULK_BATCH), **opts.env}
        self.bulk_batch = int(self.env["MINDSIGHT_BULK_BATCH_SIZE"])
        cache = opts.out.resolve() / "photos"
        self.files = ensure_photos(cache, SIZES[self.size], LANE_FILES)
        self._copy = 100_000
        self.workers = parse_approach("3").workers

    def photos(self, n: int) -> PhotoSet:
        """`n` new gallery photos (copies of the lane files under names never used before)."""
        out = []
        for i in range(n):
            self._copy += 1
            out.append(self.session.gallery.add_photo(self.files[i % len(self.files)], copy=self._copy))
        return out

    def payload(self, photo_id: int, path: str) -> str:
        return json.dumps({"photo_id": photo_id, "user_id": 1, "path": path, "tasks": ["thumbnail", "clip"]})

    def run(self) -> dict[str, Any]:
        results: dict[str, Any] = {
            "size": self.size,
            "bulk_photos": self.bulk_n,
            "bulk_batch": self.bulk_batch,
        }
        for mode in ("lanes", "no lanes"):
            results[mode] = self.mode(lanes=mode == "lanes")
            self.session.log(f"lanes bench {mode}: {results[mode]['summary']}")
        results["markdown"] = lanes_markdown(results)
        return results

    def mode(self, lanes: bool) -> dict[str, Any]:
        bench = self.bench
        bench.redis.flushall()
        group = ProcessGroup(
            bench.workdir / f"lanes-{'on' if lanes else 'off'}-{int(time.time())}", bench.base_env
        )
        approach = parse_approach("3")
        try:
            workers = bench._start(approach, group, self.env)
            warm = self.photos(16)
            since = self.session.gallery.recorder.mark()
            started = time.time()
            bench._push(warm, None)
            bench._await(warm, group, since)
            warm_rate = len(warm) / max(time.time() - started, 1e-3)
            idle = (
                [bench._single(p, group, approach, workers)[0] for p in self.photos(UPLOADS)] if lanes else []
            )
            bulk, uploads = self.photos(self.bulk_n), self.photos(UPLOADS)
            since = self.session.gallery.recorder.mark()
            source = bench.redis
            start = time.time()
            with source.pipeline(transaction=False) as pipe:
                for pid, path in bulk:
                    pipe.lpush("photo_tasks_bulk" if lanes else "photo_tasks", self.payload(pid, path))
                pipe.execute()
            interval = SPREAD * (self.bulk_n / warm_rate) / UPLOADS
            pushed: dict[int, float] = {}
            for i, (pid, path) in enumerate(uploads):
                time.sleep(max(0.0, start + (i + 1) * interval - time.time()))
                pushed[pid] = time.time()
                source.lpush("photo_tasks", self.payload(pid, path))
            done = bench._await(bulk + uploads, group, since)
        finally:
            group.stop()
        bulk_done = [done[pid] for pid, _ in bulk]
        burst_s = max(bulk_done) - start
        bulk_rate = self.bulk_n / burst_s
        latencies = [1000 * (done[pid] - pushed[pid]) for pid in pushed]
        inside = sum(1 for pid in pushed if pushed[pid] < max(bulk_done))
        out: dict[str, Any] = {
            "burst_seconds": round(burst_s, 2),
            "bulk_photos_per_s": round(bulk_rate, 2),
            "workers": self.workers,
            "bulk_batch_ms": round(1000 * self.bulk_batch * self.workers / bulk_rate, 1),
            "upload_latency_ms": [round(x, 1) for x in latencies],
            "upload_p50_ms": round(statistics.median(latencies), 1),
            "upload_p95_ms": round(_p95(latencies), 1),
            "uploads_pushed_during_burst": inside,
        }
        if idle:
            out["idle_latency_ms"] = [round(x, 1) for x in idle]
            out["idle_p95_ms"] = round(_p95(idle), 1)
        out["summary"] = (
            f"burst {out['bulk_photos_per_s']} photos/s, uploads p50 {out['upload_p50_ms']} ms "
            f"p95 {out['upload_p95_ms']} ms ({inside}/{len(pushed)} pushed during the burst)"
        )
        return out


def lanes_markdown(results: dict[str, Any]) -> str:
    on, off = results["lanes"], results["no lanes"]
    idle_p95 = on.get("idle_p95_ms", float("nan"))
    budget = idle_p95 + on["bulk_batch_ms"]
    headers = [
        "mode",
        "bulk photos/s",
        "one bulk batch ms",
        "uploads p50 ms",
        "uploads p95 ms",
        "target p95 ms",
        "met",
    ]
    rows = [
        ["idle (no burst)", "-", "-", round(statistics.median(on["idle_latency_ms"]), 1), idle_p95, "-", "-"],
        ["lanes", on["bulk_photos_per_s"], on["bulk_batch_ms"], on["upload_p50_ms"], on["upload_p95_ms"],
         round(budget, 1), "yes" if on["upload_p95_ms"] <= budget else "NO"],
        ["no lanes", off["bulk_photos_per_s"], off["bulk_batch_ms"], off["upload_p50_ms"],
         off["upload_p95_ms"], "-", "-"],
    ]  # fmt: skip
    title = (
        f"Fresh uploads during a bulk burst of {results['bulk_photos']} {results['size']} photos "
        f"(LPUSH -> callback; bulk batch {results['bulk_batch']}; "
        "target: lanes p95 <= idle p95 + one bulk batch)"
    )
    return "\n".join([title, "", *md_table(headers, rows)])


def run_lanes(session: BenchSession, opts: Options) -> dict[str, Any]:
    """The lane-latency measurement (both modes in one run)."""
    return LaneBench(session, opts).run()
