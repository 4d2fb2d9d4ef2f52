"""`python -m benchmarks.caption_bench` (`make bench-caption`): ms per BLIP caption, fp32 vs int8.

BLIP-base shapes (transformers' default `BlipConfig`: ViT-B/16 vision encoder at 384 px, 12-layer BERT
decoder with cross-attention) with random weights, so nothing is downloaded. Random weights never emit the
end token, so every caption is fixed at `--tokens` new tokens (16) on both sides. Each precision runs the
same `generate` call the captioner makes (greedy, KV cache), on the same photos, interleaved, after one
warm-up; the median of `--repeat` runs is reported per batch size. Two int8 models: `int8` is what
`mindsight models download` installs and the caption worker loads by default on CPU (vision encoder and
text decoder on onnxruntime int8: `blip_int8_install.quantize_for_file`), `torch-int8`
what a worker without that file quantises at start (`blip_int8.quantize_blip`, all torch). The int8
check against fp32 is run on both and printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import torch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (MINDSIGHT_THREADS; default 1)")
    p.add_argument("--batches", default="1,4", help="comma-separated batch sizes (default 1,4)")
    p.add_argument("--tokens", type=int, default=16, help="new tokens per caption, fixed (default 16)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per precision and batch (default 3)")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    results = run([int(b) for b in a.batches.split(",")], a.tokens, a.repeat)
    results["threads"] = a.threads
    print(report(results))
    if a.json:
        print(json.dumps(results, indent=2))


def run(batches: list[int], tokens: int, repeat: int) -> dict[str, Any]:
    """Build the models, check both int8s, time every precision per batch size, interleaved."""
    import copy
    import tempfile
    from pathlib import Path

    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

    from shared.models.caption.blip_int8 import check_int8, fp32_reference, quantize_blip
    from shared.models.caption.blip_int8_install import quantize_for_file
    from shared.models.onnx.checks import check_photos

    torch.manual_seed(0)
    fp32 = BlipForConditionalGeneration(BlipConfig()).eval()
    processor = BlipImageProcessor()  # 384 px, BLIP-base's
    reference = fp32_reference(fp32, processor)
    scratch = tempfile.TemporaryDirectory(prefix="caption-bench-")
    int8, vision, decoder = quantize_for_file(copy.deepcopy(fp32), Path(scratch.name), print)
    models = {"fp32": fp32, "int8": int8, "torch-int8": quantize_blip(fp32)}
    checks = {name: check_int8(models[name], reference).as_dict() for name in ("int8", "torch-int8")}
    _, photos = check_photos()
    fixed = {"max_new_tokens": tokens, "min_new_tokens": tokens, "num_beams": 1, "do_sample": False}
    rows = []
    for batch in batches:
        chosen = [photos[i % len(photos)] for i in range(batch)]
        pixels = processor(images=chosen, return_tensors="pt")["pixel_values"]
        times: dict[str, list[float]] = {name: [] for name in models}
        with torch.inference_mode():
            for model in models.values():
                model.generate(pixel_values=pixels, **fixed)  # warm-up
            for _ in range(repeat):
                for name, model in models.items():
                    start = time.perf_counter()
                    out = model.generate(pixel_values=pixels, **fixed)
                    times[name].append((time.perf_counter() - start) * 1000 / batch)
                    assert out.shape[1] >= tokens, out.shape
        ms = {name: statistics.median(t) for name, t in times.items()}
        rows.append({
            "batch": batch,
            **{f"{name}_ms": round(v) for name, v in ms.items()},
            "speedup": round(ms["fp32"] / ms["int8"], 2),
            "torch_int8_speedup": round(ms["fp32"] / ms["torch-int8"], 2),
            "runs": {name: [round(t) for t in v] for name, v in times.items()},
        })  # fmt: skip
    scratch.cleanup()
    machine = {"cpus": os.cpu_count(), "load_average_1m": os.getloadavg()[0]}
    return {
        "tokens": tokens,
        "repeat": repeat,
        **machine,
        "vision": vision,
        "decoder": decoder,
        "int8_checks": checks,
        "rows": rows,
    }


def report(results: dict[str, Any]) -> str:
    """A markdown table, the machine and the int8 check."""
    lines = [
        f"BLIP-base shapes, random weights, {results['tokens']} new tokens fixed, greedy, "
        f"{results['threads']} torch thread(s), {results['cpus']} CPUs visible (load average "
        f"{results['load_average_1m']:.1f} at the end), "
        f"median of {results['repeat']}",
        "",
        f"int8: vision encoder {results['vision']}, text decoder {results['decoder']} (what `models "
        "download` installs); torch-int8: all torch (quantised at start when that file is missing)",
        "",
        "| batch | fp32 ms/caption | int8 ms/caption | speed-up | torch-int8 ms/caption | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['batch']} | {r['fp32_ms']} | {r['int8_ms']} | {r['speedup']}x | {r['torch-int8_ms']} | "
            f"{r['torch_int8_speedup']}x |"
        )
    for name, c in results["int8_checks"].items():
        lines.append(
            f"\n{name} check vs fp32 (random weights, {c['steps']} steps, {len(c['photos'])} photos): "
            f"token agreement {c['token_agreement']} (exact {c['exact_token_agreement']}), "
            f"free-running {c['free_running_agreement']}, logits cosine min "
            f"{c['logits_cosine_min']} mean {c['logits_cosine_mean']}, passed {c['passed']}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
