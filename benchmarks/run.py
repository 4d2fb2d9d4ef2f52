"""`python -m benchmarks.run` (`make bench`): every approach side by side through the real pipeline.

Builds (once, cached under --out) the model and the photos, starts a private Redis and the reference
gallery, then measures each approach in turn on the same photos (interleaved when repeated, so load
from other work on the machine spreads over all of them), then the /embed_text service. Prints markdown
tables and writes everything to <out>/results-<timestamp>.json. `--sweep` runs the batching sweep instead;
`--lanes` the lane latency (fresh uploads during a bulk burst, with and without lanes: benchmarks.lane_bench).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.approaches import DEFAULT_APPROACHES, Approach, parse_approach
from benchmarks.machine import describe_machine, load_average, machine_line
from benchmarks.models import ARCHITECTURES, BenchModel, ensure_model
from benchmarks.photos import SIZES
from benchmarks.report import check_targets, markdown, summarise

BENCH_TOKEN = "bench-internal-token-7f3a91c2"
"""The gallery's internal token for the run (a private gallery on loopback)."""


@dataclass
class Options:
    """What to measure; the command-line flags, with their defaults."""

    photos: int = 48
    sizes: list[str] = field(default_factory=lambda: ["12mp", "1080p"])
    approaches: list[str] = field(default_factory=lambda: list(DEFAULT_APPROACHES))
    model: str = "vit-b-32"
    model_dir: Path | None = None
    repeat: int = 1
    latency_samples: int = 7
    embed_requests: int = 200
    embed: bool = True
    out: Path = Path("var/bench")
    sweep: bool = False
    lanes: bool = False
    bulk: int = 1000
    """--bulk: photos in the burst of the --lanes measurement."""
    quiet: float | None = 0.15
    env: dict[str, str] = field(default_factory=dict)
    """--set KEY=VALUE: settings for our processes (e.g. MINDSIGHT_BATCH_SIZE=64 on a GPU)."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--photos", type=int, help="photos per burst and size (default 48)")
    p.add_argument("--sizes", help="comma-separated: 12mp, 1080p (default both)")
    p.add_argument("--approaches", default=",".join(DEFAULT_APPROACHES), help="e.g. 1,2,3,3-int8,3-1p,3-onnx")
    p.add_argument("--model", choices=sorted(ARCHITECTURES), default="vit-b-32")
    p.add_argument("--model-dir", type=Path, help="use this transformers CLIP folder instead of building one")
    p.add_argument("--repeat", type=int, default=1, help="run every approach N times, interleaved")
    p.add_argument("--latency-samples", type=int, help="single photos timed on an empty queue (default 7)")
    p.add_argument("--embed-requests", type=int, help="/embed_text requests per load (default 200)")
    p.add_argument("--no-embed", action="store_true", help="skip the /embed_text measurements")
    p.add_argument("--quick", action="store_true", help="3 photos, 1080p, 2 latency samples, 20 requests")
    p.add_argument("--sweep", action="store_true", help="batch size / wait / process layout sweep of ours")
    p.add_argument(
        "--lanes", action="store_true", help="fresh-upload latency during a bulk burst, lanes on/off"
    )
    p.add_argument("--bulk", type=int, default=1000, help="photos in the --lanes burst (default 1000)")
    p.add_argument("--out", type=Path, default=Path("var/bench"), help="cache, logs and results")
    p.add_argument(
        "--quiet", type=float, help="before each burst wait (<= 90 s) until other work uses under this "
        "share of the machine (default 0.15; 1 = never wait)",
    )  # fmt: skip
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a setting for our router and workers, e.g. --set MINDSIGHT_BATCH_SIZE=64 (repeatable)",
    )  # fmt: skip
    a = p.parse_args(argv)
    bad = [kv for kv in a.set if "=" not in kv or not kv.partition("=")[0].isupper()]
    if bad:
        p.error(f"--set takes KEY=VALUE with an upper-case setting name, got {bad[0]!r}")
    # --quick changes the defaults only: explicit flags still win.
    quick = {"photos": 3, "sizes": "1080p", "latency_samples": 2, "embed_requests": 20, "quiet": 1.0}
    normal = {"photos": 48, "sizes": "12mp,1080p", "latency_samples": 7, "embed_requests": 200, "quiet": 0.15}
    for name, value in (quick if a.quick else normal).items():
        if getattr(a, name) is None:
            setattr(a, name, value)
    opts = Options(
        photos=a.photos, sizes=[s.strip() for s in a.sizes.split(",") if s.strip()],
        approaches=[x.strip() for x in a.approaches.split(",") if x.strip()], model=a.model,
        model_dir=a.model_dir, repeat=a.repeat, latency_samples=a.latency_samples,
        embed_requests=a.embed_requests, embed=not a.no_embed, out=a.out, sweep=a.sweep, lanes=a.lanes,
        bulk=a.bulk,
        quiet=None if a.quiet >= 1 else a.quiet, env=dict(kv.partition("=")[::2] for kv in a.set),
    )  # fmt: skip
    unknown = [s for s in opts.sizes if s not in SIZES]
    if unknown or opts.photos < 1 or opts.repeat < 1:
        p.error(f"--sizes must be among {', '.join(SIZES)}; --photos and --repeat at least 1")
    for key in opts.approaches:
        try:
            parse_approach(key)
        except ValueError as exc:
            p.error(str(exc))
    return opts


def prepare_model(opts: Options) -> tuple[BenchModel, str]:
    """The model every approach runs, and its description for the report."""
    models_dir = (opts.out / "models").resolve()
    if opts.model_dir is not None:
        return BenchModel.from_folder(
            "bench-custom", opts.model_dir, models_dir
        ), f"custom ({opts.model_dir})"
    arch = ARCHITECTURES[opts.model]
    log(f"model {arch.name}: building random weights if not cached under {models_dir}")
    folder = ensure_model(arch, models_dir)
    return BenchModel.from_folder(arch.label, folder, models_dir), (
        f"{arch.name} architecture (transformers CLIPModel, random weights, seed 0), {arch.projection}-d"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = parse_args(argv)
    from benchmarks.session import BenchSession

    model, model_text = prepare_model(opts)
    approaches: list[Approach] = [parse_approach(k) for k in opts.approaches]
    machine = describe_machine()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with BenchSession(opts, model, BENCH_TOKEN, stamp, log) as session:
        if opts.sweep:
            from benchmarks.sweep import run_sweep

            results = run_sweep(session, opts)
        elif opts.lanes:
            from benchmarks.lane_bench import run_lanes

            results = run_lanes(session, opts)
        else:
            results = session.run_all(approaches)
    results["machine"] = machine
    results["machine"]["load_average_end"] = load_average()
    results["model"] = {"description": model_text, "label": model.label, "dim": model.dim}
    results["options"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()}
    if not opts.sweep and not opts.lanes:
        results["summary"] = rows = summarise(session.runs)
        results["targets"] = targets = check_targets(rows, session.embed_runs)
        results["markdown"] = markdown(machine_line(machine), model_text, rows, session.embed_runs, targets)
    kind = "sweep-" if opts.sweep else "lanes-" if opts.lanes else ""
    out = opts.out / f"results-{kind}{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(results["markdown"])
    log(f"results written to {out}")
    return results


if __name__ == "__main__":
    main()
