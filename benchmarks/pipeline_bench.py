"""One measurement of one approach through the real pipeline: Redis -> worker(s) -> gallery callbacks.

Per measurement: fresh processes on a flushed Redis; a warm-up on other photos (so every worker has
loaded its model and run it once); then a burst (every photo LPUSHed at once, as a bulk import does, or
at a fixed rate); then single photos one at a time on an empty queue; then the workers' peak RSS.
Photos used for single-photo latency are never part of the burst, so no decode cache can serve them.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from benchmarks.approaches import Approach
from benchmarks.baselines import TIMINGS_KEY
from benchmarks.cpu_noise import foreign_share, snapshot, wait_for_quiet
from benchmarks.gallery_clock import BenchGallery
from benchmarks.models import BenchModel
from benchmarks.processes import Proc, ProcessGroup, new_port, peak_rss_mb, wait_http_ok
from benchmarks.time_split import (
    baseline_ms,
    baseline_rows,
    baseline_split,
    median_split,
    rq_queue_wait_ms,
    stage_ms,
    worker_stage_seconds,
)

PhotoSet = list[tuple[int, str]]
"""(gallery photo id, path as the backend puts it in the job)."""

STARTUP_TIMEOUT_S = 300.0
"""Loading ViT-L/14 in torch on a busy 2-core box can take a minute or more."""

QUIET_TIMEOUT_S = 90.0
"""Longest wait for a calm machine before a burst; after it the burst runs anyway, its noise recorded."""


@dataclass
class PipelineRun:
    """What one measurement found; times in milliseconds unless named otherwise."""

    approach: str
    title: str
    size: str
    photos: int
    seconds: float
    photos_per_s: float
    mean_photo_latency_ms: float
    """Mean LPUSH-to-callback time over the burst (mostly waiting behind other photos)."""
    split_ms: dict[str, float]
    """Per photo: decode, inference (preprocessing included), callback worker time; queue_wait wall time."""
    single_latency_ms: list[float]
    single_split_ms: dict[str, float]
    """Median over the single photos of each stage; `other` is the rest (queues, router, RQ, HTTP)."""
    peak_rss_mb: dict[str, float]
    runtime: dict[str, Any] = field(default_factory=dict)
    arrival_rate: float | None = None
    foreign_cpu_share: float = 0.0
    """Share of the machine other work used during the burst (0..1): the noise in this number."""
    round: str = ""
    """Which round of a run (approaches of one round ran back to back), for ratios within a round."""

    @property
    def single_latency_median_ms(self) -> float:
        return statistics.median(self.single_latency_ms) if self.single_latency_ms else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "single_latency_median_ms": self.single_latency_median_ms}


class PipelineBench:
    """Runs approaches against one Redis, one gallery and one model."""

    def __init__(self, workdir: Path, redis_url: str, gallery: BenchGallery, model: BenchModel) -> None:
        self.workdir = workdir
        self.redis = redis.Redis.from_url(redis_url)
        self.gallery = gallery
        self.model = model
        self.base_env = {
            **model.env(),
            "REDIS_URL": redis_url,
            "API_BASE_URL": gallery.url,
            "PROCESSING_INTERNAL_TOKEN": gallery.internal_token,
            "PROJECT_ROOT": str(gallery.root),
            "CAPTION_ENABLED": "0",
            "MINDSIGHT_LOG_LEVEL": "INFO",
            # this checkout first, then whatever the bench itself was given (packages outside site-packages)
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")) if p
            ),
        }
        self.onnx_image_fp32: Path | None = None
        """The fp32 image graph approach 2 runs (set once the export exists)."""
        self.own_pids: list[int] = []
        """Processes of ours besides those under test (Redis), excluded from the noise figure."""
        self.quiet_share: float | None = None
        """Before each burst, wait (up to QUIET_TIMEOUT_S) until others use less than this share."""

    def measure(
        self,
        approach: Approach,
        size: str,
        burst: PhotoSet,
        warmup: PhotoSet,
        singles: PhotoSet,
        *,
        env: dict[str, str] | None = None,
        arrival_rate: float | None = None,
    ) -> PipelineRun:
        """Start `approach`, warm it up, time the burst and the single photos, read RSS, stop it."""
        self.redis.flushall()
        tag = f"{approach.key}-{size}-{int(time.time() * 1000) % 10**8}"
        group = ProcessGroup(self.workdir / tag, self.base_env)
        try:
            workers = self._start(approach, group, {**approach.env, **(env or {})})
            warm = warmup[: self.warmup_count(approach, env)]
            since = self.gallery.recorder.mark()
            self._push(warm, None)
            self._await(warm, group, since)
            if self.quiet_share is not None:
                wait_for_quiet(self.quiet_share, QUIET_TIMEOUT_S)
            before = worker_stage_seconds(workers)
            since = self.gallery.recorder.mark()
            cpu_start = snapshot([*self.own_pids, *(p.pid for p in group.procs)])
            pushed, start = self._push(burst, arrival_rate)
            done = self._await(burst, group, since)
            noise = foreign_share(cpu_start, snapshot(cpu_start.ours))
            seconds = max(done.values()) - start
            split = self._split(approach, workers, before, pushed)
            timed = [self._single(photo, group, approach, workers) for photo in singles]
            singles_ms = [ms for ms, _ in timed]
            rss = {p.name: round(peak_rss_mb(p.pid), 1) for p in group.procs}
            runtime = self._runtime(approach, workers)
        finally:
            group.stop()
        return PipelineRun(
            approach=approach.key, title=approach.title, size=size, photos=len(burst),
            seconds=round(seconds, 3), photos_per_s=round(len(burst) / seconds, 3),
            mean_photo_latency_ms=round(statistics.fmean(1000 * (done[i] - pushed[i]) for i in done), 1),
            split_ms=split, single_latency_ms=[round(x, 1) for x in singles_ms],
            single_split_ms=median_split([parts for _, parts in timed]), peak_rss_mb=rss,
            runtime=runtime, arrival_rate=arrival_rate, foreign_cpu_share=noise,
        )  # fmt: skip

    # -- processes ----------------------------------------------------------------------------------
    def _start(self, approach: Approach, group: ProcessGroup, env: dict[str, str]) -> list[Proc]:
        if approach.kind == "hf-torch":
            argv = ["-m", "benchmarks.baselines", "hf-torch", "--model-dir", str(self.model.model_dir)]
            return [group.start("baseline-1", argv, env)]
        if approach.kind == "ort-fp32":
            if self.onnx_image_fp32 is None:
                raise RuntimeError(
                    "approach 2 needs the ONNX fp32 export of the model (mindsight models export)"
                )
            argv = ["-m", "benchmarks.baselines", "ort-fp32", "--model-dir", str(self.model.model_dir),
                    "--onnx", str(self.onnx_image_fp32)]  # fmt: skip
            return [group.start("baseline-2", argv, env)]
        group.mindsight("router", "router", env=env)
        workers = [
            group.mindsight(
                f"worker-clip-{i}", "worker", "clip", env={**env, "MINDSIGHT_METRICS_PORT": str(new_port())}
            )
            for i in range(approach.workers)
        ]
        for worker in workers:
            wait_http_ok(f"http://127.0.0.1:{worker.metrics_port}/readyz", group, STARTUP_TIMEOUT_S)
        return workers

    def warmup_count(self, approach: Approach, env: dict[str, str] | None) -> int:
        """Warm-up photos for `approach`: a full batch per worker process of ours (and of `bare`)."""
        if not approach.runs_our_code:
            return 2
        batch = int({**approach.env, **(env or {})}.get("MINDSIGHT_BATCH_SIZE", "8"))
        return approach.workers * max(batch, 2)

    # -- pushing and waiting ------------------------------------------------------------------------
    def _payload(self, photo_id: int, path: str) -> str:
        return json.dumps({"photo_id": photo_id, "user_id": 1, "path": path, "tasks": ["thumbnail", "clip"]})

    def _push(self, photos: PhotoSet, rate: float | None) -> tuple[dict[int, float], float]:
        """LPUSH every photo (all at once, or `rate` per second); photo id -> push time, and the first."""
        queue = "photo_tasks"
        self.redis.delete(TIMINGS_KEY)
        pushed: dict[int, float] = {}
        start = time.time()
        if rate is None:
            with self.redis.pipeline(transaction=False) as pipe:
                for photo_id, path in photos:
                    pipe.lpush(queue, self._payload(photo_id, path))
                    pushed[photo_id] = start
                pipe.execute()
            return pushed, start
        for i, (photo_id, path) in enumerate(photos):
            time.sleep(max(0.0, start + i / rate - time.time()))
            pushed[photo_id] = time.time()
            self.redis.lpush(queue, self._payload(photo_id, path))
        return pushed, start

    def _await(
        self, photos: PhotoSet, group: ProcessGroup, since: int, timeout: float | None = None
    ) -> dict[int, float]:
        """Wait for an image callback of each photo after log position `since`; photo id -> its time."""
        ids = {p for p, _ in photos}
        deadline = time.monotonic() + (timeout or STARTUP_TIMEOUT_S + 10 * len(photos))
        while True:
            try:
                return self.gallery.recorder.wait_for(ids, since, timeout=2.0, kind="image")
            except TimeoutError:
                group.check_alive()
                if time.monotonic() > deadline:
                    raise

    def _single(
        self, photo: tuple[int, str], group: ProcessGroup, approach: Approach, workers: list[Proc]
    ) -> tuple[float, dict[str, float]]:
        """LPUSH one photo on an idle pipeline: milliseconds until its callback, and where they went."""
        time.sleep(0.3)  # let the previous photo's work settle so the queue is truly empty
        photo_id, _ = photo
        before = worker_stage_seconds(workers)
        self.redis.delete(TIMINGS_KEY)
        since = self.gallery.recorder.mark()
        start = time.time()
        self.redis.lpush("photo_tasks", self._payload(*photo))
        done = self._await([photo], group, since, timeout=60)
        total = 1000 * (done[photo_id] - start)
        if approach.is_ours:
            parts = stage_ms(before, worker_stage_seconds(workers))
        else:
            rows = baseline_rows(self.redis, {photo_id})
            parts = baseline_ms(rows[0]) if rows else {}
        parts["other"] = total - sum(parts.values())
        return total, parts

    def _split(
        self, approach: Approach, workers: list[Proc], before: dict[str, float], pushed: dict[int, float]
    ) -> dict[str, float]:
        if not approach.is_ours:
            return baseline_split(baseline_rows(self.redis, set(pushed)), pushed)
        split = stage_ms(before, worker_stage_seconds(workers), per=len(pushed))
        split["queue_wait"] = rq_queue_wait_ms(self.redis, pushed)
        return {k: round(v, 1) for k, v in split.items()}

    def _runtime(self, approach: Approach, workers: list[Proc]) -> dict[str, Any]:
        """What really ran: ours as its worker's /readyz reports it; fixed for the baselines."""
        if approach.kind == "hf-torch":
            return {"runtime": "torch", "precision": "fp32", "threads": "torch default"}
        if approach.kind == "ort-fp32":
            return {"runtime": "onnxruntime", "precision": "fp32", "threads": "onnxruntime default"}
        ready = httpx.get(f"http://127.0.0.1:{workers[0].metrics_port}/readyz", timeout=5).json()
        models: dict[str, Any] = ready.get("models", {}).get("clip", {})
        info: dict[str, Any] = next(iter(models.values()), {})
        threads = approach.env.get("MINDSIGHT_THREADS", "default")
        return {**info, "workers": approach.workers, "threads": threads}
