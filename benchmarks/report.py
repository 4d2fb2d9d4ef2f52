"""Turn measurements into the headline: medians over repeats, ratios within the run, targets, markdown."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from benchmarks.embed_load import EmbedApiRun
from benchmarks.pipeline_bench import PipelineRun
from benchmarks.time_split import median_split

TARGET_X_VS_1 = 8.0
TARGET_X_VS_2 = 5.0
TARGET_SINGLE_MS = 120.0
"""ViT-B/32 targets of issue 10 (with default settings): >= 8x the legacy runner, >= 5x Immich-style,
one photo on an empty queue in < 120 ms."""
TARGET_EMBED_P50_MS = 15.0
TARGET_ONNX_RSS_MB = 600.0
TARGET_OVERHEAD = 0.10
"""Most of ours' photos/s the pipeline (router, RQ, callbacks) may cost against `bare` (issue 10)."""

SAME_SETTINGS = ("runtime", "precision", "device", "workers", "threads")
"""What ours and a `bare` row must share for one to be the other's overhead reference."""


def _ratio(a: float, b: float | None) -> float | None:
    return round(a / b, 2) if b else None


def summarise(runs: list[PipelineRun]) -> list[dict[str, Any]]:
    """One row per (size, approach): median photos/s over repeats, spread, ratios vs approaches 1 and 2.

    Ratios use the medians; `x_vs_1_range` gives the ratios of each repeat against the same repeat's
    baseline (approaches run interleaved), which is how noise on a shared machine shows.
    """
    by_key: dict[tuple[str, str], list[PipelineRun]] = defaultdict(list)
    for run in runs:
        by_key[(run.size, run.approach)].append(run)
    rows: list[dict[str, Any]] = []
    for (size, approach), group in by_key.items():
        rates = [r.photos_per_s for r in group]
        median_run = sorted(group, key=lambda r: r.photos_per_s)[len(group) // 2]
        singles = [x for r in group for x in r.single_latency_ms]
        rss = {name: max(r.peak_rss_mb.get(name, 0.0) for r in group) for name in median_run.peak_rss_mb}
        rows.append({
            "size": size, "approach": approach, "title": median_run.title, "photos": median_run.photos,
            "repeats": len(group), "photos_per_s": round(statistics.median(rates), 2),
            "photos_per_s_min": min(rates), "photos_per_s_max": max(rates),
            "split_ms": median_run.split_ms, "mean_photo_latency_ms": median_run.mean_photo_latency_ms,
            "single_latency_median_ms": round(statistics.median(singles), 1) if singles else None,
            "single_latency_min_ms": min(singles, default=None),
            "single_latency_max_ms": max(singles, default=None),
            "single_split_ms": median_split([r.single_split_ms for r in group if r.single_split_ms]),
            "peak_rss_mb": rss, "runtime": next((r.runtime for r in group if r.runtime), {}),
            "foreign_cpu_share_max": max(r.foreign_cpu_share for r in group),
        })  # fmt: skip
    for row in rows:
        base = {b: _find(rows, row["size"], b) for b in ("1", "2")}
        for b, other in base.items():
            row[f"x_vs_{b}"] = _ratio(row["photos_per_s"], other["photos_per_s"] if other else None)
            row[f"x_vs_{b}_range"] = _paired_range(by_key, row["size"], row["approach"], b)
    for row in rows:
        bare = _bare_match(rows, row)
        if bare is not None and bare["photos_per_s"]:
            spread = _paired_range(by_key, row["size"], row["approach"], bare["approach"])
            row["bare_match"] = bare["approach"]
            row["overhead_vs_bare"] = round(1 - row["photos_per_s"] / bare["photos_per_s"], 3)
            row["overhead_vs_bare_range"] = [round(1 - x, 2) for x in reversed(spread)] if spread else None
    return sorted(rows, key=lambda r: (r["size"], r["approach"]))


def _bare_match(rows: list[dict[str, Any]], ours: dict[str, Any]) -> dict[str, Any] | None:
    """The `bare` row that ran what ours' row `ours` ran (SAME_SETTINGS), same suffix first; None if none."""
    if not ours["approach"].startswith("3"):
        return None
    settings = [ours["runtime"].get(k) for k in SAME_SETTINGS]
    same = [
        r for r in rows
        if r["approach"].startswith("bare") and r["size"] == ours["size"]
        and [r["runtime"].get(k) for k in SAME_SETTINGS] == settings
    ]  # fmt: skip
    twin = "bare" + ours["approach"][1:]
    return next((r for r in same if r["approach"] == twin), same[0] if same else None)


def _find(rows: list[dict[str, Any]], size: str, approach: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["size"] == size and r["approach"] == approach), None)


def _paired_range(
    by_key: dict[tuple[str, str], list[PipelineRun]], size: str, approach: str, baseline: str
) -> list[float] | None:
    """Min and max of the ratio to `baseline` measured within the same round (same minutes, same noise)."""
    theirs = {r.round: r for r in by_key.get((size, baseline), []) if r.round}
    ratios = [
        a.photos_per_s / theirs[a.round].photos_per_s
        for a in by_key.get((size, approach), [])
        if a.round in theirs and theirs[a.round].photos_per_s
    ]
    return [round(min(ratios), 2), round(max(ratios), 2)] if ratios else None


def check_targets(
    rows: list[dict[str, Any]], embed: list[EmbedApiRun], size: str = "12mp"
) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and pass/fail (ours only; 12 MP photos)."""
    out: list[dict[str, Any]] = []
    for row in rows:
        if row["size"] != size or not row["approach"].startswith("3"):
            continue
        a = row["approach"]
        for b, goal in (("1", TARGET_X_VS_1), ("2", TARGET_X_VS_2)):
            x = row.get(f"x_vs_{b}")
            if x is not None:
                out.append(_target(f"{a}: photos/s vs approach {b}", x, f">= {goal:g}x", x >= goal))
        overhead = row.get("overhead_vs_bare")
        if overhead is not None:
            name = f"{a}: pipeline overhead vs {row['bare_match']}, % of bare photos/s"
            most = f"<= {100 * TARGET_OVERHEAD:g}%"
            out.append(_target(name, round(100 * overhead, 1), most, overhead <= TARGET_OVERHEAD))
        ms = row["single_latency_median_ms"]
        if ms is not None:
            goal_ms = f"< {TARGET_SINGLE_MS:g} ms"
            out.append(_target(f"{a}: single-photo latency (median)", ms, goal_ms, ms < TARGET_SINGLE_MS))
        if str(row["runtime"].get("runtime", "")).startswith("onnx"):
            rss = max((v for k, v in row["peak_rss_mb"].items() if k.startswith("worker")), default=0.0)
            goal_mb = f"< {TARGET_ONNX_RSS_MB:g} MB"
            out.append(_target(f"{a}: CLIP worker peak RSS (ONNX)", rss, goal_mb, rss < TARGET_ONNX_RSS_MB))
    for run in embed:
        for load in run.loads:
            if load.query == "short" and load.concurrency == 1:
                ok = load.p50_ms < TARGET_EMBED_P50_MS
                name = f"/embed_text {run.variant}: short query p50"
                out.append(_target(name, load.p50_ms, f"< {TARGET_EMBED_P50_MS:g} ms", ok))
    return out


def _target(name: str, value: float, goal: str, ok: bool) -> dict[str, Any]:
    return {"target": name, "value": value, "goal": goal, "met": bool(ok)}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float | int) else str(value)


def with_range(row: dict[str, Any], baseline: str) -> str:
    """`6.02 (5.1-7.2)`: the ratio of medians and, when there are several rounds, the per-round range."""
    ratio, spread = row.get(f"x_vs_{baseline}"), row.get(f"x_vs_{baseline}_range")
    if ratio is None:
        return "-"
    if not spread or spread[0] == spread[1] or row["approach"] == baseline:
        return f"{ratio:g}"
    return f"{ratio:g} ({spread[0]:g}-{spread[1]:g})"


def md_table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table: numbers printed compactly, None as '-'."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


PIPELINE_HEADERS = [
    "size", "approach", "photos", "photos/s (min-max)", "x vs 1", "x vs 2", "decode", "inference", "callback",
    "queue wait", "single photo ms (min-max)", "peak RSS MB", "others' CPU",
]  # fmt: skip
SPLIT = ("decode", "inference", "callback", "other")
SINGLE_HEADERS = [
    "size",
    "approach",
    "total",
    "decode",
    "inference",
    "callback",
    "other (queues, router, RQ)",
]
EMBED_HEADERS = [
    "/embed_text", "query", "concurrency", "requests", "p50 ms", "p99 ms", "req/s", "model mean ms",
    "in service mean ms", "peak RSS MB",
]  # fmt: skip


OVERHEAD_HEADERS = [
    "size", "ours", "bare", "ours photos/s", "bare photos/s", "pipeline overhead (per round)",
    "ours single ms", "bare single ms",
]  # fmt: skip


def _overhead_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The pipeline's overhead: ours against the `bare` loop that ran the same models the same way."""
    table = []
    for r in rows:
        if r.get("overhead_vs_bare") is None:
            continue
        bare = _find(rows, r["size"], r["bare_match"])
        assert bare is not None
        overhead = f"**{100 * r['overhead_vs_bare']:.1f}%**"
        spread = r.get("overhead_vs_bare_range")
        if spread and spread[0] != spread[1]:
            overhead += f" ({100 * spread[0]:.0f}% to {100 * spread[1]:.0f}%)"
        table.append([
            r["size"], r["approach"], bare["approach"], r["photos_per_s"], bare["photos_per_s"], overhead,
            r["single_latency_median_ms"], bare["single_latency_median_ms"],
        ])  # fmt: skip
    if not table:
        return []
    title = "Pipeline overhead, 1 - ours/bare photos/s (bare: same models, runtime, processes, threads):"
    return ["", title, "", *md_table(OVERHEAD_HEADERS, table)]


def markdown(
    machine_line: str, model: str, rows: list[dict[str, Any]], embed: list[EmbedApiRun],
    targets: list[dict[str, Any]],
) -> str:  # fmt: skip
    """The tables printed to stdout and pasted into docs/performance.md (split columns: ms per photo)."""
    lines = [f"Machine: {machine_line}", f"Model: {model}", ""]
    table = []
    for r in rows:
        s = r["split_ms"]
        rate = f"**{r['photos_per_s']:g}**"
        if r["repeats"] > 1:
            rate += f" ({r['photos_per_s_min']:g}-{r['photos_per_s_max']:g})"
        single = _fmt(r["single_latency_median_ms"])
        if r["single_latency_min_ms"] is not None:
            single += f" ({r['single_latency_min_ms']:g}-{r['single_latency_max_ms']:g})"
        rss = ", ".join(f"{v:.0f}" for k, v in r["peak_rss_mb"].items() if k != "router")
        table.append([
            r["size"], r["approach"], r["photos"], rate, with_range(r, "1"), with_range(r, "2"),
            s.get("decode"), s.get("inference"), s.get("callback"), s.get("queue_wait"), single, rss,
            f"{100 * r['foreign_cpu_share_max']:.0f}%",
        ])  # fmt: skip
    lines += md_table(PIPELINE_HEADERS, table)
    lines += _overhead_lines(rows)
    singles = [
        [
            r["size"],
            r["approach"],
            r["single_latency_median_ms"],
            *(r["single_split_ms"].get(k) for k in SPLIT),
        ]
        for r in rows
        if r["single_split_ms"]
    ]
    lines += ["", "Single photo on an empty queue, LPUSH to callback (medians, ms):", ""]
    lines += md_table(SINGLE_HEADERS, singles)
    if any(r["approach"].startswith("bare") for r in rows):
        lines += ["", "(`bare`: one photo through an idle loop; `other`: the loopback round trip.)"]
    lines += ["", "Approaches:"]
    seen = set()
    for r in rows:
        if r["approach"] not in seen:
            seen.add(r["approach"])
            rt = r["runtime"]
            detail = ", ".join(
                f"{k}={rt[k]}" for k in ("runtime", "precision", "device", "threads") if k in rt
            )
            lines.append(f"- `{r['approach']}`: {r['title']} ({detail})")
    if embed:
        loads = [
            [run.variant, x.query, x.concurrency, x.requests, x.p50_ms, x.p99_ms, x.requests_per_s,
             x.model_mean_ms, x.server_mean_ms, round(run.peak_rss_mb)]
            for run in embed
            for x in run.loads
        ]  # fmt: skip
        lines += ["", *md_table(EMBED_HEADERS, loads)]
    if targets:
        met = [[t["target"], t["value"], t["goal"], "yes" if t["met"] else "**no**"] for t in targets]
        lines += ["", *md_table(["target", "measured", "goal", "met"], met)]
    return "\n".join(lines)
