"""Where a photo's time goes: decode, inference (preprocessing included), callback and queue wait.

Ours: the workers' own `mindsight_stage_seconds` histograms (read before and after, summed over worker
processes) and, for the queue wait, the start time of the RQ job that carried each photo. Baselines: the
per-photo timers they write to Redis (benchmarks.baselines). Stage times are worker time per photo;
queue wait is wall time from LPUSH until a worker started on the photo.
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import UTC
from typing import Any

import redis

from benchmarks.baselines import TIMINGS_KEY
from benchmarks.processes import Proc, stage_seconds

STAGES = ("decode", "inference", "callback")


def worker_stage_seconds(workers: list[Proc]) -> dict[str, float]:
    """Seconds spent so far in each stage, all worker processes together."""
    totals: dict[str, float] = {}
    for worker in workers:
        if worker.metrics_port:
            for stage, (seconds, _) in stage_seconds(worker.metrics_port).items():
                totals[stage] = totals.get(stage, 0.0) + seconds
    return totals


def stage_ms(before: dict[str, float], after: dict[str, float], per: int = 1) -> dict[str, float]:
    """Milliseconds per photo in each stage between two `worker_stage_seconds` readings."""
    return {s: 1000 * (after.get(s, 0.0) - before.get(s, 0.0)) / per for s in STAGES}


def baseline_rows(connection: redis.Redis, photo_ids: set[int], timeout: float = 5.0) -> list[dict[str, Any]]:
    """The baseline's timer rows of `photo_ids`; each is written just after its callback returned."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [json.loads(raw) for raw in connection.lrange(TIMINGS_KEY, 0, -1)]
        rows = [r for r in rows if r["photo_id"] in photo_ids]
        if len(rows) >= len(photo_ids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)


def baseline_ms(row: dict[str, Any]) -> dict[str, float]:
    """One baseline photo's stages in ms, preprocessing counted in inference as in ours."""
    parts = {s: 1000 * row.get(s, 0.0) for s in ("decode", "callback")}
    parts["inference"] = 1000 * (row.get("preprocess", 0.0) + row.get("inference", 0.0))
    return parts


def baseline_split(rows: list[dict[str, Any]], pushed: dict[int, float]) -> dict[str, float]:
    """Mean stage times of a baseline burst, plus queue wait and preprocessing on its own."""
    if not rows:
        return {}
    split = {k: statistics.fmean(baseline_ms(r)[k] for r in rows) for k in STAGES}
    split["preprocess"] = 1000 * statistics.fmean(r["preprocess"] for r in rows)
    split["queue_wait"] = 1000 * statistics.fmean(r["popped"] - pushed[r["photo_id"]] for r in rows)
    return {k: round(v, 1) for k, v in split.items()}


def rq_queue_wait_ms(connection: redis.Redis, pushed: dict[int, float]) -> float:
    """Mean time from LPUSH until a worker started the RQ job holding the photo (router hop included)."""
    from rq.job import Job
    from rq.registry import FinishedJobRegistry
    from rq.serializers import JSONSerializer

    from shared.payloads import Capability
    from workers.dispatch import rq_queue
    from workers.failure import envelope_of

    ids = FinishedJobRegistry(queue=rq_queue(connection, Capability.CLIP)).get_job_ids()
    waits: list[float] = []
    for job in Job.fetch_many(ids, connection=connection, serializer=JSONSerializer):
        if job is None or job.started_at is None:
            continue
        started = job.started_at
        started_ts = (started if started.tzinfo else started.replace(tzinfo=UTC)).timestamp()
        for payload in envelope_of(job).payloads:
            if payload.get("photo_id") in pushed:
                waits.append(started_ts - pushed[payload["photo_id"]])
    return round(1000 * statistics.fmean(waits), 1) if waits else float("nan")


def median_split(parts: list[dict[str, float]]) -> dict[str, float]:
    """Stage by stage median over several single-photo measurements."""
    if not parts:
        return {}
    return {k: round(statistics.median(p[k] for p in parts), 1) for k in parts[0]}
