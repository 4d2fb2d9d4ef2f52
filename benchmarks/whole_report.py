"""The whole-photo headline: medians over repeats, ratios vs legacy and Immich-style within rounds, tables."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from benchmarks.report import md_table, with_range
from benchmarks.whole_photo import CAPABILITIES, WholeRun

BASELINES = ("legacy", "immich")

TARGET_X_VS_LEGACY = 2.0
TARGET_IMAGE_TIME_VS_LEGACY = 0.5
TARGET_STACK_RSS_MB = 3 * 1024.0
"""Issue 10: >= 2x the original runner's photos/s, all image embeddings in <= 0.5x its time, stack <= 3 GB."""


def _median(values: list[float], digits: int = 2) -> float | None:
    return round(statistics.median(values), digits) if values else None


def summarise_whole(runs: list[WholeRun]) -> list[dict[str, Any]]:
    """One row per approach: medians over repeats; ratios of medians and per-round ranges vs baselines."""
    by_key: dict[str, list[WholeRun]] = defaultdict(list)
    for run in runs:
        by_key[run.approach].append(run)
    rows: list[dict[str, Any]] = []
    for approach, group in by_key.items():
        rates = [r.photos_per_s for r in group]
        mid = sorted(group, key=lambda r: r.photos_per_s)[len(group) // 2]
        rss = {name: max(r.peak_rss_mb.get(name, 0.0) for r in group) for name in mid.peak_rss_mb}
        rows.append({
            "approach": approach, "title": mid.title, "photos": mid.photos, "repeats": len(group),
            "photos_per_s": _median(rates, 3), "photos_per_s_min": min(rates), "photos_per_s_max": max(rates),
            "image_s": _median([r.image_s for r in group]),
            "caption_s": _median([r.caption_s for r in group]),
            "faces_s": _median([r.faces_s for r in group]),
            "everything_s": _median([r.everything_s for r in group]),
            "single_image_ms": _median([x for r in group for x in r.single_image_ms]),
            "single_all_ms": _median([x for r in group for x in r.single_all_ms]),
            "peak_rss_mb": rss, "rss_total_mb": round(sum(rss.values()), 1),
            "faces_found": mid.faces_found, "caption_words": sorted(set(mid.caption_words)),
            "stage_s": mid.stage_s, "runtime": mid.runtime,
            "foreign_cpu_share_max": max(r.foreign_cpu_share for r in group),
        })  # fmt: skip
    for row in rows:
        for base in BASELINES:
            other = next((r for r in rows if r["approach"] == base), None)
            row[f"x_vs_{base}"] = _ratio(row["photos_per_s"], other["photos_per_s"] if other else None)
            row[f"x_vs_{base}_range"] = _paired(by_key, row["approach"], base)
            row[f"image_time_vs_{base}"] = _ratio(row["image_s"], other["image_s"] if other else None)
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _paired(by_key: dict[str, list[WholeRun]], approach: str, base: str) -> list[float] | None:
    """Min and max of photos/s over the baseline's, each measured within the same round."""
    theirs = {r.round: r for r in by_key.get(base, []) if r.round}
    ratios = [a.photos_per_s / theirs[a.round].photos_per_s for a in by_key[approach] if a.round in theirs]
    return [round(min(ratios), 2), round(max(ratios), 2)] if ratios else None


def check_whole_targets(rows: list[dict[str, Any]], gpu: bool = False) -> list[dict[str, Any]]:
    """Issue 10's whole-photo targets for each layout of ours, with the measured value and pass/fail; the
    stack's RSS goal is the CPU stack's (a 4 GB NAS), not a GPU machine's."""
    out: list[dict[str, Any]] = []
    for row in rows:
        if row["approach"] in BASELINES:
            continue
        a = row["approach"]
        goals = [
            (f"{a}: photos/s vs legacy", row["x_vs_legacy"], f">= {TARGET_X_VS_LEGACY:g}x",
             lambda v: v >= TARGET_X_VS_LEGACY),
            (f"{a}: all image embeddings, time vs legacy", row["image_time_vs_legacy"],
             f"<= {TARGET_IMAGE_TIME_VS_LEGACY:g}x", lambda v: v <= TARGET_IMAGE_TIME_VS_LEGACY),
            (f"{a}: whole stack peak RSS (MB)", None if gpu else row["rss_total_mb"],
             f"<= {TARGET_STACK_RSS_MB:g} MB", lambda v: v <= TARGET_STACK_RSS_MB),
        ]  # fmt: skip
        for name, value, goal, ok in goals:
            if value is not None:
                out.append({"target": name, "value": value, "goal": goal, "met": bool(ok(value))})
    return out


MAIN_HEADERS = [
    "approach", "photos", "photos/s (min-max)", "x vs legacy", "x vs immich", "all images s",
    "images time vs legacy", "all captions s", "all faces s", "everything s", "single: image ms",
    "single: everything ms", "stack peak RSS MB", "others' CPU",
]  # fmt: skip


def markdown_whole(
    machine_line: str, models: str, rows: list[dict[str, Any]], targets: list[dict[str, Any]]
) -> str:
    """The whole-photo tables: headline, worker seconds per capability, peak RSS per process, targets."""
    lines = [f"Machine: {machine_line}", f"Models: {models}", ""]
    main = []
    for r in rows:
        rate = f"**{r['photos_per_s']:g}**"
        if r["repeats"] > 1:
            rate += f" ({r['photos_per_s_min']:g}-{r['photos_per_s_max']:g})"
        main.append([
            r["approach"], r["photos"], rate, with_range(r, "legacy"), with_range(r, "immich"), r["image_s"],
            r["image_time_vs_legacy"], r["caption_s"], r["faces_s"], r["everything_s"], r["single_image_ms"],
            r["single_all_ms"], r["rss_total_mb"], f"{100 * r['foreign_cpu_share_max']:.0f}%",
        ])  # fmt: skip
    lines += md_table(MAIN_HEADERS, main)
    lines += ["", "Worker seconds during the burst, per capability (decode / inference / callback):", ""]
    stage_rows = [
        [r["approach"], *(_stages(r["stage_s"].get(cap, {})) for cap in CAPABILITIES),
         r["faces_found"], ", ".join(map(str, r["caption_words"])) or "-"]
        for r in rows
    ]  # fmt: skip
    headers = ["approach", "clip s", "caption s", "face s", "faces found", "caption words"]
    lines += md_table(headers, stage_rows)
    lines += ["", "Peak RSS (VmHWM) per process, MB:", ""]
    lines += md_table(
        ["approach", "processes", "sum"],
        [[r["approach"], ", ".join(f"{k} {v:.0f}" for k, v in r["peak_rss_mb"].items()), r["rss_total_mb"]]
         for r in rows],
    )  # fmt: skip
    lines += ["", "Approaches:"]
    lines += [f"- `{r['approach']}`: {r['title']} (ran: {_runtime(r['runtime'])})" for r in rows]
    if targets:
        met = [[t["target"], t["value"], t["goal"], "yes" if t["met"] else "**no**"] for t in targets]
        lines += ["", *md_table(["target", "measured", "goal", "met"], met)]
    return "\n".join(lines)


def _stages(stages: dict[str, float]) -> str:
    if not stages:
        return "-"
    return " / ".join(f"{stages.get(s, 0.0):.1f}" for s in ("decode", "inference", "callback"))


def _runtime(runtime: dict[str, Any]) -> str:
    """`clip=onnxruntime int8, caption=torch int8, ...` from the workers' /readyz or the baselines' text."""
    parts = []
    for cap, info in runtime.items():
        if isinstance(info, dict):
            models = [m for m in info.values() if isinstance(m, dict)] or [info]
            found = models[0]
            detail = " ".join(str(found[k]) for k in ("runtime", "precision") if k in found)
            if "cuda" in str(found.get("device", "")).lower():
                detail += f" on {found['device']}"
            parts.append(f"{cap}={detail or '?'}")
        else:
            parts.append(f"{cap}={info}")
    return ", ".join(parts)
