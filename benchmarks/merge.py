"""`python -m benchmarks.merge results-*.json`: one report from several runs, noisy measurements left out.

On a shared machine a single run is at the mercy of whatever else starts meanwhile. Each measurement
records the share of the machine other work took during it; this merges the rounds of several runs,
drops measurements above --max-noise (saying how many), and reports medians, spreads and ratios exactly
as one run would (ratios still paired within a round).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.embed_load import EmbedApiRun, EmbedLoad
from benchmarks.machine import machine_line
from benchmarks.pipeline_bench import PipelineRun
from benchmarks.report import check_targets, markdown, summarise


def load_results(path: Path) -> tuple[list[PipelineRun], list[EmbedApiRun], dict[str, Any]]:
    """The measurements of one results file (files from before `round` existed get it from their order)."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    pipeline = data.get("pipeline", [])
    per_round = max(1, len({(r["size"], r["approach"]) for r in pipeline}))
    runs = []
    for i, raw in enumerate(pipeline):
        fields = {k: v for k, v in raw.items() if k in PipelineRun.__dataclass_fields__}
        split = fields.setdefault("single_split_ms", {})
        if split and not any(split.get(k) for k in ("decode", "inference")):
            fields["single_split_ms"] = {}  # files from before baseline single timers were read reliably
        fields["round"] = fields.get("round") or f"{path.stem}/{i // per_round + 1}"
        runs.append(PipelineRun(**fields))
    embed = [
        EmbedApiRun(**{**raw, "loads": [EmbedLoad(**load) for load in raw["loads"]]})
        for raw in data.get("embed_api", [])
    ]
    return runs, embed, data


def merge(paths: list[Path], max_noise: float) -> tuple[str, dict[str, Any]]:
    """Markdown and a JSON-ready summary of the measurements of `paths` at or below `max_noise`."""
    kept: list[PipelineRun] = []
    dropped: list[str] = []
    embed: list[EmbedApiRun] = []
    first: dict[str, Any] = {}
    for path in paths:
        runs, embed_runs, data = load_results(path)
        first = first or data
        for run in runs:
            if run.foreign_cpu_share > max_noise:
                dropped.append(f"{run.round} {run.size} {run.approach} ({100 * run.foreign_cpu_share:.0f}%)")
            else:
                kept.append(run)
        embed = embed_runs or embed  # the last file that measured the embed API
    rows = summarise(kept)
    targets = check_targets(rows, embed)
    text = markdown(machine_line(first["machine"]), first["model"]["description"], rows, embed, targets)
    note = (
        f"Merged {len(paths)} run(s): {len(kept)} measurements kept, {len(dropped)} left out because other "
        f"work took more than {100 * max_noise:.0f}% of the machine during them"
        + (f": {', '.join(dropped)}" if dropped else ".")
    )
    summary = {"files": [str(p) for p in paths], "dropped": dropped, "summary": rows, "targets": targets}
    return f"{note}\n\n{text}", summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.merge", description=__doc__)
    p.add_argument("files", nargs="+", type=Path, help="results-*.json files of `python -m benchmarks.run`")
    p.add_argument("--max-noise", type=float, default=0.10, help="drop measurements above this (0..1)")
    p.add_argument("--out", type=Path, help="also write the merged summary as JSON here")
    a = p.parse_args(argv)
    text, summary = merge(a.files, a.max_noise)
    if a.out:
        a.out.write_text(json.dumps({**summary, "markdown": text}, indent=2, default=str), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
