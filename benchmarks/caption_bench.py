"""`python -m benchmarks.caption_bench` (`make bench-caption`): ms per BLIP caption, fp32 vs int8.

BLIP-base shapes (transformers' default `BlipConfig`: ViT-B/16 vision encoder at 384 px, 12-layer BERT
decoder with cross-attention) with random weights, so nothing is downloaded. Random weights never emit the
end token, so every caption is fixed at `--tokens` new tokens (16) on both sides. Each precision runs the
same `generate` call the captioner makes (greedy, KV cache), on the same photos, interleaved, after one
warm-up; the median of `--repeat` runs is reported per batch size. The int8 model is the captioner's
(`shared.models.caption.blip_int8.quantize_blip`), and its load-time check is run and printed as well.
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
    """Build the models, check int8, time both precisions per batch size."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

    from shared.models.caption.blip_int8 import check_int8, fp32_reference, quantize_blip
    from shared.models.onnx.checks import check_photos

    torch.manual_seed(0)
    fp32 = BlipForConditionalGeneration(BlipConfig()).eval()
    int8 = quantize_blip(fp32)
    processor = BlipImageProcessor()  # 384 px, BLIP-base's
    check = check_int8(int8, fp32_reference(fp32, processor))
    _, photos = check_photos()
    fixed = {"max_new_tokens": tokens, "min_new_tokens": tokens, "num_beams": 1, "do_sample": False}
    rows = []
    for batch in batches:
        chosen = [photos[i % len(photos)] for i in range(batch)]
        pixels = processor(images=chosen, return_tensors="pt")["pixel_values"]
        times: dict[str, list[float]] = {"fp32": [], "int8": []}
        models = {"fp32": fp32, "int8": int8}
        with torch.inference_mode():
            for model in models.values():
                model.generate(pixel_values=pixels, **fixed)  # warm-up
            for _ in range(repeat):
                for name, model in models.items():
                    start = time.perf_counter()
                    out = model.generate(pixel_values=pixels, **fixed)
                    times[name].append((time.perf_counter() - start) * 1000 / batch)
                    assert out.shape[1] >= tokens, out.shape
        fp, q = statistics.median(times["fp32"]), statistics.median(times["int8"])
        rows.append({
            "batch": batch, "fp32_ms": round(fp), "int8_ms": round(q), "speedup": round(fp / q, 2),
            "fp32_runs": [round(t) for t in times["fp32"]], "int8_runs": [round(t) for t in times["int8"]],
        })  # fmt: skip
    machine = {"cpus": os.cpu_count(), "load_average_1m": os.getloadavg()[0]}
    return {"tokens": tokens, "repeat": repeat, **machine, "int8_check": check.as_dict(), "rows": rows}


def report(results: dict[str, Any]) -> str:
    """A markdown table, the machine and the int8 check."""
    lines = [
        f"BLIP-base shapes, random weights, {results['tokens']} new tokens fixed, greedy, "
        f"{results['threads']} torch thread(s), {results['cpus']} CPUs visible (load average "
        f"{results['load_average_1m']:.1f} at the end), "
        f"median of {results['repeat']}",
        "",
        "| batch | fp32 ms/caption | int8 ms/caption | int8 speed-up | runs fp32 / int8 |",
        "|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['batch']} | {r['fp32_ms']} | {r['int8_ms']} | {r['speedup']}x | "
            f"{r['fp32_runs']} / {r['int8_runs']} |"
        )
    c = results["int8_check"]
    lines.append(
        f"\nint8 check vs fp32 (random weights, {c['steps']} steps, {len(c['photos'])} photos): "
        f"token agreement {c['token_agreement']} (exact {c['exact_token_agreement']}), "
        f"free-running {c['free_running_agreement']}, logits cosine min "
        f"{c['logits_cosine_min']} mean {c['logits_cosine_mean']}, passed {c['passed']}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
