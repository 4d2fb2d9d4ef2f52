"""The whole-photo measurement (`python -m benchmarks.run --whole`): what a user's gallery asks for.

Each photo is pushed as the backend's default job `{"photo_id", "user_id", "path", "tasks": ["thumbnail",
"clip", "face"]}` with captions on, so it is done once the gallery has its image embedding, its caption
(with the caption's CLIP text embedding) and its faces. Per approach (benchmarks.whole_layouts), on a
flushed Redis with fresh processes: a warm-up on other photos (never timed), then the burst (every photo
LPUSHed at once), then single photos one at a time on an empty queue, then every process's peak RSS.
The gallery's clock (benchmarks.gallery_clock) tells callbacks apart by kind, which gives: time until
every image embedding is posted (search works from then), until every caption, until all faces, until
everything; photos/s = photos / time until everything. A failure callback stops the measurement.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from benchmarks.cpu_noise import foreign_share, snapshot, wait_for_quiet
from benchmarks.gallery_clock import Callback, Kind
from benchmarks.pipeline_bench import QUIET_TIMEOUT_S, STARTUP_TIMEOUT_S, PhotoSet
from benchmarks.processes import Proc, ProcessGroup, capability_stage_seconds, peak_rss_mb
from benchmarks.time_split import baseline_rows
from benchmarks.whole_layouts import BaselineModels, Layout, start_layout

if TYPE_CHECKING:
    from benchmarks.session import BenchSession

TASKS = ["thumbnail", "clip", "face"]
"""The backend's default job."""

KINDS: tuple[Kind, ...] = ("image", "caption", "faces")
"""The callbacks a photo of that job gets with captions on."""

CAPABILITIES = ("clip", "caption", "face")

CAPTION_NEW_TOKENS = 16
"""Random-weight BLIP never emits its end token: every caption is fixed at this many new tokens (words)."""

CAPTION_MAX_LENGTH = CAPTION_NEW_TOKENS + 1
"""CAPTION_MAX_LENGTH, read by the product's captioner and the baselines alike: BLIP's `generate`
counts the decoder prompt ([DEC]) in max_length, so 17 gives 16 new tokens."""

WARMUP_BATCH = 8
"""Warm-up photos per process of ours that embeds images: one default batch (MINDSIGHT_BATCH_SIZE) each,
so every process has run every capability it hosts before the burst."""


def whole_env(blip_dir: Path) -> dict[str, str]:
    """Settings of every approach, baselines included: captions on with the fixed length, offline faces."""
    return {
        "CAPTION_ENABLED": "1",
        "CAPTION_MODEL_NAME": str(blip_dir),
        "CAPTION_MAX_LENGTH": str(CAPTION_MAX_LENGTH),
        "FACE_BACKEND": "retinaface-dlib",
        "PROCESSING_FACE_EMBEDDING_DIM": "128",  # dlib's descriptors; the face worker refuses another dim
        "PROCESSING_DEFAULT_FACE_MODEL": "dlib-retinaface",
    }


class CallbackFailed(RuntimeError):
    """The gallery received a failure callback: the approach did not do the work."""


@dataclass
class WholeRun:
    """What one whole-photo measurement found; seconds from the LPUSH of the burst unless named."""

    approach: str
    title: str
    photos: int
    photos_per_s: float
    image_s: float
    """Until every photo's image embedding was posted."""
    caption_s: float
    faces_s: float
    everything_s: float
    faces_found: int
    caption_words: list[int]
    """Words of each burst photo's posted caption (the fixed generated length shows here)."""
    stage_s: dict[str, dict[str, float]]
    """Worker seconds during the burst per capability and stage (decode, inference, callback)."""
    single_image_ms: list[float]
    single_all_ms: list[float]
    peak_rss_mb: dict[str, float]
    runtime: dict[str, Any] = field(default_factory=dict)
    foreign_cpu_share: float = 0.0
    round: str = ""

    @property
    def rss_total_mb(self) -> float:
        return round(sum(self.peak_rss_mb.values()), 1)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rss_total_mb": self.rss_total_mb}


class WholePhotoBench:
    """Measures layouts against a BenchSession's Redis, gallery and photos."""

    def __init__(self, session: BenchSession, blip_dir: Path) -> None:
        self.session = session
        self.redis = session.bench.redis
        self.recorder = session.gallery.recorder
        self.env = {**session.bench.base_env, **whole_env(blip_dir)}
        self.models = BaselineModels(session.model.model_dir, blip_dir, session.exports.image_fp32)

    def measure(self, layout: Layout, burst: PhotoSet, warmup: PhotoSet, singles: PhotoSet) -> WholeRun:
        """Start `layout`, warm it up, time the burst and the single photos, read RSS, stop it."""
        self.redis.flushall()
        tag = f"whole-{layout.key}-{int(time.time() * 1000) % 10**8}"
        group = ProcessGroup(self.session.workdir / "logs" / tag, self.env)
        try:
            ours = self.session.opts.env if layout.is_ours else {}  # --set applies to ours only
            workers = start_layout(layout, group, ours, self.models, STARTUP_TIMEOUT_S)
            photo_workers = sum(1 for _, args in layout.workers if args[1] in ("photo", "clip"))
            warm = warmup[: WARMUP_BATCH * photo_workers if layout.is_ours else 2]
            since = self.recorder.mark()
            self._push(warm)
            self._await(warm, since, group)
            if self.session.opts.quiet is not None:
                wait_for_quiet(self.session.opts.quiet, QUIET_TIMEOUT_S)
            before = stage_seconds(workers)
            cpu_start = snapshot([*self.session.bench.own_pids, *(p.pid for p in group.procs)])
            since = self.recorder.mark()
            start = self._push(burst)
            events = self._await(burst, since, group)
            noise = foreign_share(cpu_start, snapshot(cpu_start.ours))
            ids = {p for p, _ in burst}
            stages = self._stages(layout, workers, before, ids)
            singles_ms = [self._single(photo, group) for photo in singles]
            rss = {p.name: round(peak_rss_mb(p.pid), 1) for p in group.procs}
            runtime = self._runtime(layout, workers)
        finally:
            group.stop()
        last = {kind: max(e.at for e in events if e.kind == kind) - start for kind in KINDS}
        everything = max(last.values())
        return WholeRun(
            approach=layout.key, title=layout.title, photos=len(burst),
            photos_per_s=round(len(burst) / everything, 3), image_s=round(last["image"], 3),
            caption_s=round(last["caption"], 3), faces_s=round(last["faces"], 3),
            everything_s=round(everything, 3),
            faces_found=sum(e.items for e in events if e.kind == "faces"),
            caption_words=[e.items for e in events if e.kind == "caption"], stage_s=stages,
            single_image_ms=[round(i, 1) for i, _ in singles_ms],
            single_all_ms=[round(a, 1) for _, a in singles_ms], peak_rss_mb=rss, runtime=runtime,
            foreign_cpu_share=noise,
        )  # fmt: skip

    def _push(self, photos: PhotoSet) -> float:
        """LPUSH every photo at once; when."""
        queue = "photo_tasks"
        start = time.time()
        with self.redis.pipeline(transaction=False) as pipe:
            for photo_id, path in photos:
                pipe.lpush(
                    queue, json.dumps({"photo_id": photo_id, "user_id": 1, "path": path, "tasks": TASKS})
                )
            pipe.execute()
        return start

    def _await(
        self, photos: PhotoSet, since: int, group: ProcessGroup, timeout: float | None = None
    ) -> list[Callback]:
        """Wait until every photo has all of KINDS after `since`; each photo's first callback of each kind."""
        ids = {p for p, _ in photos}
        deadline = time.monotonic() + (timeout or STARTUP_TIMEOUT_S + 30 * len(photos))
        for kind in KINDS:
            while True:
                failed = [e for e in self.recorder.events(since) if e.kind == "failure" and e.photo_id in ids]
                if failed:
                    raise CallbackFailed(f"failure callbacks: {failed[:3]}\n{group.procs[-1].tail(2000)}")
                try:
                    self.recorder.wait_for(ids, since, timeout=2.0, kind=kind)
                    break
                except TimeoutError:
                    group.check_alive()
                    if time.monotonic() > deadline:
                        raise
        first: dict[tuple[int, str], Callback] = {}
        for event in self.recorder.events(since):
            if event.photo_id in ids and 200 <= event.status < 300:
                first.setdefault((event.photo_id, event.kind), event)
        return list(first.values())

    def _single(self, photo: tuple[int, str], group: ProcessGroup) -> tuple[float, float]:
        """One photo on an idle pipeline: ms until its image embedding, and until everything, is posted."""
        time.sleep(0.3)
        since = self.recorder.mark()
        start = self._push([photo])
        events = self._await([photo], since, group, timeout=300)
        image = next(e.at for e in events if e.kind == "image")
        return 1000 * (image - start), 1000 * (max(e.at for e in events) - start)

    def _stages(
        self, layout: Layout, workers: list[Proc], before: dict[str, dict[str, float]], ids: set[int]
    ) -> dict[str, dict[str, float]]:
        if layout.is_ours:
            after = stage_seconds(workers)
            return {
                cap: {s: round(v - before.get(cap, {}).get(s, 0.0), 2) for s, v in stages.items()}
                for cap, stages in after.items()
                if cap in CAPABILITIES
            }
        rows = baseline_rows(self.redis, ids)
        return {
            cap: {
                s: round(sum(r[cap][s] for r in rows if cap in r), 2)
                for s in ("decode", "inference", "callback")
            }
            for cap in CAPABILITIES
        }

    def _runtime(self, layout: Layout, workers: list[Proc]) -> dict[str, Any]:
        """What really ran: ours as the workers' /readyz report it; fixed for the baselines."""
        if not layout.is_ours:
            clip = "onnxruntime fp32" if layout.kind == "immich" else "torch fp32"
            where = " on CUDA" if self.session.opts.gpu else ""
            return {"clip": clip + where, "caption": "torch fp32" + where, "face": "retinaface-dlib",
                    "threads": "default"}  # fmt: skip
        out: dict[str, Any] = {"threads": layout.env.get("MINDSIGHT_THREADS", "1")}
        for worker in workers:
            ready = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/readyz", timeout=5).json()
            for cap, models in ready.get("models", {}).items():
                out.setdefault(cap, models)
        return out


def stage_seconds(workers: list[Proc]) -> dict[str, dict[str, float]]:
    """Seconds spent so far per capability and stage, all worker processes together."""
    totals: dict[str, dict[str, float]] = {}
    for worker in (w for w in workers if w.metrics_port):  # the baselines time themselves
        for (cap, stage), (seconds, _) in capability_stage_seconds(worker.metrics_port).items():
            totals.setdefault(cap, {})[stage] = totals.get(cap, {}).get(stage, 0.0) + seconds
    return totals


def run_whole(session: BenchSession, layouts: list[Layout], blip_dir: Path) -> list[WholeRun]:
    """Every layout `repeat` times, interleaved, on the session's burst; logged as they finish."""
    bench = WholePhotoBench(session, blip_dir)
    runs: list[WholeRun] = []
    for repeat in range(session.opts.repeat):
        session.log(f"whole photo: round {repeat + 1}/{session.opts.repeat}")
        for layout in layouts:
            if layout.kind == "immich" and session.exports.image_fp32 is None:
                session.log(f"skipping {layout.key}: no ONNX fp32 export ({session.exports.problem})")
                continue
            size = session.opts.sizes[0]
            run = bench.measure(layout, session.bursts[size], session.warmup, session.singles[size])
            run.round = f"{session.stamp}/{repeat + 1}"
            session.log(
                f"{layout.key:>12}: {run.photos_per_s:.3f} photos/s, images {run.image_s} s, all "
                f"{run.everything_s} s, faces {run.faces_found}, "
                f"caption words {sorted(set(run.caption_words))}, "
                f"RSS {run.rss_total_mb} MB"
            )
            runs.append(run)
    return runs
