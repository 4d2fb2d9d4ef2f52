"""One benchmark session: private Redis, the gallery with its photos registered, ONNX exports, the runs.

Photo sets are disjoint on purpose: warm-up photos (1080p), burst photos and single-latency photos never
overlap, so a worker's decode cache can never serve a timed photo.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from benchmarks.approaches import INT8_ENV, Approach, cores
from benchmarks.bare_bench import measure_bare
from benchmarks.embed_load import EmbedApiRun, bench_embed_api
from benchmarks.gallery_clock import BenchGallery
from benchmarks.models import BenchModel
from benchmarks.onnx_exports import OnnxExports, ensure_exports
from benchmarks.photos import SIZES, ensure_photos
from benchmarks.pipeline_bench import PhotoSet, PipelineBench, PipelineRun
from benchmarks.processes import ProcessGroup
from shared.embedded_redis import EmbeddedRedis

if TYPE_CHECKING:
    from benchmarks.run import Options

WARMUP_FILES = 4
"""Distinct 1080p files set aside for warm-ups (never timed)."""

WARMUP_PHOTOS = 64
"""Warm-up photo ids (the warm-up files registered repeatedly): enough for 4 workers x batch 16."""


class BenchSession:
    """Everything one `python -m benchmarks.run` needs, started once and torn down at the end."""

    def __init__(
        self, opts: Options, model: BenchModel, token: str, stamp: str, log: Callable[[str], None]
    ) -> None:
        self.opts = opts
        self.stamp = stamp
        self.model = model
        self.log = log
        self.workdir = (opts.out / "runs" / stamp).resolve()
        self.redis = EmbeddedRedis(self.workdir / "redis", persist=False)
        self.gallery = BenchGallery(self.workdir / "gallery", token)
        self.bench = PipelineBench(self.workdir / "logs", self.redis.url, self.gallery, model)
        self.runs: list[PipelineRun] = []
        self.embed_runs: list[EmbedApiRun] = []
        self.skipped: list[dict[str, str]] = []
        self.exports = OnnxExports()
        self.warmup: PhotoSet = []
        self.bursts: dict[str, PhotoSet] = {}
        self.singles: dict[str, PhotoSet] = {}

    def __enter__(self) -> BenchSession:
        self.redis.start()
        assert self.redis.proc is not None
        self.bench.own_pids = [self.redis.proc.pid]
        self.bench.quiet_share = self.opts.quiet
        self.gallery.start()
        self._register_photos()
        # the lane measurement runs ours on torch only, and a GPU runs torch: no export needed
        if not self.opts.lanes and not self.opts.gpu:
            self.exports = ensure_exports(self.model, self.workdir / "export", self.log)
            self.bench.onnx_image_fp32 = self.exports.image_fp32
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.gallery.stop()
        self.redis.stop()
        shutil.rmtree(self.workdir / "gallery", ignore_errors=True)  # hard links and SQLite only

    def _register_photos(self) -> None:
        cache = self.opts.out.resolve() / "photos"
        n, k = self.opts.photos, self.opts.latency_samples
        self.log(f"photos: {', '.join(self.opts.sizes)}, {n} per burst + {k} single (generated once, cached)")
        hd_files = ensure_photos(
            cache, SIZES["1080p"], WARMUP_FILES + (n + k if "1080p" in self.opts.sizes else 0)
        )
        self.warmup = [
            self.gallery.add_photo(hd_files[i % WARMUP_FILES], copy=1 + i // WARMUP_FILES)
            for i in range(WARMUP_PHOTOS)
        ]
        for size in self.opts.sizes:
            if size == "1080p":
                photos = [self.gallery.add_photo(p) for p in hd_files[WARMUP_FILES:]]
            else:
                photos = [self.gallery.add_photo(p) for p in ensure_photos(cache, SIZES[size], n + k)]
            self.bursts[size], self.singles[size] = photos[:n], photos[n : n + k]

    def available(self, approach: Approach) -> str | None:
        """Why `approach` cannot run here (missing ONNX export), or None."""
        needs_fp32 = approach.kind == "ort-fp32" or approach.env.get("MINDSIGHT_CLIP_RUNTIME") == "onnx"
        if needs_fp32 and self.exports.image_fp32 is None:
            return f"no ONNX export ({self.exports.problem})"
        if approach.env.get("MINDSIGHT_CLIP_PRECISION") == "int8" and not self.exports.int8:
            return f"no int8 ONNX export ({self.exports.problem})"
        return None

    def measure(
        self, approach: Approach, size: str, env: dict[str, str] | None = None, **kw: Any
    ) -> PipelineRun:
        """One measurement of `approach` on the `size` photos (with --set and `env`); logged when done."""
        env = {**self.opts.env, **(env or {})} if approach.runs_our_code else {}
        photos = (self.bursts[size], self.warmup, self.singles[size])
        if approach.kind == "bare":
            run = measure_bare(self.bench, approach, size, *photos, env=env)
        else:
            run = self.bench.measure(approach, size, *photos, env=env, **kw)
        self.log(
            f"{approach.key:>10} {size:>5}: {run.photos_per_s:7.2f} photos/s, single "
            f"{run.single_latency_median_ms:6.0f} ms, split {run.split_ms}, RSS {run.peak_rss_mb}"
        )
        return run

    def run_all(self, approaches: list[Approach]) -> dict[str, Any]:
        """Every approach on every size, `repeat` times interleaved; then the embed API."""
        runnable = []
        for approach in approaches:
            reason = self.available(approach)
            if reason:
                self.log(f"skipping approach {approach.key}: {reason}")
                self.skipped.append({"approach": approach.key, "reason": reason})
            else:
                runnable.append(approach)
        for repeat in range(self.opts.repeat):
            self.log(f"round {repeat + 1}/{self.opts.repeat}")
            for size in self.opts.sizes:
                for approach in runnable:
                    run = self.measure(approach, size)
                    run.round = f"{self.stamp}/{repeat + 1}"
                    self.runs.append(run)
        if self.opts.embed:
            self._embed_api()
        return {
            "pipeline": [r.to_json() for r in self.runs],
            "embed_api": [r.to_json() for r in self.embed_runs],
            "skipped": self.skipped,
            "onnx_export_checks": self.exports.checks,
        }

    def _embed_api(self) -> None:
        variants = {"torch": {"MINDSIGHT_CLIP_RUNTIME": "torch"}}
        if self.exports.text_fp32 is not None:
            variants["onnx"] = {"MINDSIGHT_CLIP_RUNTIME": "onnx"}
        if self.exports.int8:
            variants["onnx-int8"] = dict(INT8_ENV)
            if cores() > 1:  # a lone query on an idle box may use every core
                variants[f"onnx-int8-{cores()}t"] = {**INT8_ENV, "MINDSIGHT_THREADS": str(cores())}
        for variant, env in variants.items():
            group = ProcessGroup(self.workdir / "logs" / f"embed-{variant}", self.bench.base_env)
            run = bench_embed_api(group, variant, env, self.opts.embed_requests)
            self.embed_runs.append(run)
            short = next(x for x in run.loads if x.query == "short" and x.concurrency == 1)
            self.log(f"embed-api {variant}: short p50 {short.p50_ms} ms, RSS {run.peak_rss_mb} MB")
