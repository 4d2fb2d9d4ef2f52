"""`python -m benchmarks.run --sweep`: the batching and process-layout measurements behind the defaults.

Three sweeps of ours (int8 when the export exists), on the first --sizes entry:
- batch size x batch wait on a burst (a bulk import: everything is queued, so the wait should not matter);
- batch wait under paced arrivals at ~80% of the burst rate (uploads trickling in, where the wait decides
  how full batches get when workers are busy, and what it costs in latency);
- process layout at the default batching: 1 process x 1 thread, 1 x N threads, N x 1, N x N (N = cores).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmarks.approaches import Approach, cores, parse_approach
from benchmarks.pipeline_bench import PipelineRun
from benchmarks.report import md_table

if TYPE_CHECKING:
    from benchmarks.run import Options
    from benchmarks.session import BenchSession

BATCH_SIZES = (1, 4, 8, 16)
BATCH_WAITS_MS = (0, 25, 100)
PACED_FRACTION = 0.8


def _row(sweep: str, run: PipelineRun, approach: Approach, batch: int, wait: int) -> dict[str, Any]:
    return {
        "sweep": sweep, "approach": approach.key, "workers": approach.workers,
        "threads": int(approach.env.get("MINDSIGHT_THREADS", "1")), "batch": batch, "wait_ms": wait,
        "arrival_per_s": run.arrival_rate, "photos_per_s": run.photos_per_s,
        "mean_photo_latency_ms": run.mean_photo_latency_ms,
        "single_latency_median_ms": round(run.single_latency_median_ms, 1), "split_ms": run.split_ms,
        "single_split_ms": run.single_split_ms,
        "peak_rss_mb": run.peak_rss_mb, "foreign_cpu_share": run.foreign_cpu_share,
    }  # fmt: skip


def run_sweep(session: BenchSession, opts: Options) -> dict[str, Any]:
    """Run the three sweeps; rows plus a markdown table."""
    base = "3-int8" if session.available(parse_approach("3-int8")) is None else "3"
    size = opts.sizes[0]
    rows: list[dict[str, Any]] = []

    def one(sweep: str, key: str, batch: int, wait: int, rate: float | None = None) -> PipelineRun:
        approach = parse_approach(key)
        env = {"MINDSIGHT_BATCH_SIZE": str(batch), "MINDSIGHT_BATCH_WAIT_MS": str(wait)}
        session.log(
            f"sweep {sweep}: {key} batch {batch} wait {wait} ms" + (f" at {rate:.1f}/s" if rate else "")
        )
        run = session.measure(approach, size, env=env, arrival_rate=rate)
        rows.append(_row(sweep, run, approach, batch, wait))
        return run

    default_rate = 0.0
    for batch in BATCH_SIZES:
        for wait in BATCH_WAITS_MS:
            run = one("burst", base, batch, wait)
            if (batch, wait) == (8, 25):
                default_rate = run.photos_per_s
    rate = max(0.5, PACED_FRACTION * default_rate)
    for wait in BATCH_WAITS_MS:
        one("paced", base, 8, wait, rate)
    n = cores()
    layouts = [f"{base}-1p-1t", f"{base}-1p-{n}t", f"{base}-{n}p-1t", f"{base}-{n}p-{n}t"]
    for key in dict.fromkeys(layouts):
        one("layout", key, 8, 25)
    return {"sweep": rows, "size": size, "markdown": sweep_markdown(rows, size)}


SWEEP_HEADERS = [
    "sweep", "approach", "processes x threads", "batch", "wait ms", "arrivals/s", "photos/s",
    "mean latency ms", "single photo ms", "decode", "inference", "callback", "queue wait", "others' CPU",
]  # fmt: skip


def sweep_markdown(rows: list[dict[str, Any]], size: str) -> str:
    """One table for all three sweeps (split columns: ms per photo)."""
    table = []
    for r in rows:
        s = r["split_ms"]
        arrivals = f"{r['arrival_per_s']:.1f}" if r["arrival_per_s"] else "burst"
        others = f"{100 * r['foreign_cpu_share']:.0f}%"
        table.append([
            r["sweep"], r["approach"], f"{r['workers']} x {r['threads']}", r["batch"], r["wait_ms"], arrivals,
            r["photos_per_s"], r["mean_photo_latency_ms"], r["single_latency_median_ms"], s.get("decode"),
            s.get("inference"), s.get("callback"), s.get("queue_wait"), others,
        ])  # fmt: skip
    title = f"Sweep on {size} photos (photos/s end to end; latencies LPUSH to callback)"
    return "\n".join([title, "", *md_table(SWEEP_HEADERS, table)])
