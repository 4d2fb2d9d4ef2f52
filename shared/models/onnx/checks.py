"""Export checks: an ONNX export must reproduce its torch model on real photos and texts.

The torch reference runs the full 77-token text forward; the export runs only up to the longest real token,
batched and one text at a time, so the checks also prove the shortened text forward exact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shared.models.clip.backbone import ClipBackbone, TokenBatch

CHECK_TEXTS = [
    "a photo of an astronaut",
    "cat",
    "",
    "A DOG running on the beach at sunset!",
    "it’s “quoted” — with a dash & &amp; entities",
    "café, naïve, straße, İstanbul, 日本語, 🐈",
    "numbers 12345 and 3.14",
    "一只猫在沙滩上。",
    "海边的日落 sunset",
    "an extremely " + "long " * 90 + "caption that runs past the context",
]
"""Short queries (the common case), unicode, HTML entities, Chinese (the gallery's users write it), and
one text longer than the context."""


@dataclass(frozen=True)
class TorchReference:
    """What the torch model gives on the check photos and texts."""

    photo_names: list[str]
    pixels: np.ndarray
    image: np.ndarray
    tokens: TokenBatch
    text: np.ndarray


def check_photos() -> tuple[list[str], list[Image.Image]]:
    """scikit-image's astronaut, chelsea and coffee when installed, else deterministic synthetic pictures."""
    try:
        from skimage import data

        names = ["astronaut", "chelsea", "coffee"]
        return [f"skimage:{n}" for n in names], [Image.fromarray(getattr(data, n)()) for n in names]
    except ImportError:
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:300, 0:400]
        gradient = np.stack([x * 255 // 400, y * 255 // 300, (x + y) * 255 // 700], axis=-1)
        checker = ((x // 25 + y // 25) % 2 * 255)[..., None].repeat(3, axis=-1)
        noise = rng.integers(0, 256, (300, 400, 3))
        arrays = [gradient, checker, (gradient + noise) // 2]
        return ["synthetic:gradient", "synthetic:checker", "synthetic:noise"], [
            Image.fromarray(a.astype(np.uint8)) for a in arrays
        ]


def torch_reference(backbone: ClipBackbone) -> TorchReference:
    """Embed the check photos and texts with the loaded torch backbone, texts over the full context."""
    names, photos = check_photos()
    pixels = backbone.preprocess(photos)
    tokens = backbone.tokenize(CHECK_TEXTS)
    full = TokenBatch(ids=tokens.ids, lengths=np.full(len(tokens.ids), tokens.ids.shape[1], dtype=np.int64))
    return TorchReference(
        photo_names=names,
        pixels=pixels,
        image=backbone.encode_pixels(pixels),
        tokens=tokens,
        text=backbone.encode_tokens(full),  # needed == context: every position runs
    )


def compare_export(folder: Path, ref: TorchReference, reference: dict[str, np.ndarray] | None = None) -> dict:
    """Cosines of the export at `folder` against the torch reference (and against `reference` outputs)."""
    from shared.models.clip.onnx_backend import OnnxClip

    # The reference's whole context (Chinese-CLIP's is 512 positions), not the runtime's default cap of 77.
    onnx = OnnxClip(folder, threads=max(1, os.cpu_count() or 1), max_tokens=ref.tokens.ids.shape[1])
    onnx.load()
    names, photos = check_photos()
    tokens = onnx.tokenize(CHECK_TEXTS)
    image = onnx.encode_pixels(onnx.preprocess(photos))
    text = onnx.encode_tokens(tokens)
    singles = np.concatenate([onnx.encode_tokens(onnx.tokenize([t])) for t in CHECK_TEXTS])
    short_texts = CHECK_TEXTS[:-1]  # without the long one, the batch runs far fewer than 77 positions
    short = onnx.tokenize(short_texts)
    short_out = onnx.encode_tokens(short)
    short_full = onnx.encode_token_ids(short.ids)
    checks: dict[str, Any] = {
        "photos": names,
        "texts": len(CHECK_TEXTS),
        "preprocess_equal": bool(np.array_equal(onnx.preprocess(photos), ref.pixels)),
        "tokenizer_ids_equal": bool(np.array_equal(tokens.ids, ref.tokens.ids)),
        "image_cosine_vs_torch": _stats(image, ref.image),
        "text_cosine_vs_torch_full_context": _stats(text, ref.text),
        "text_one_by_one_cosine_vs_torch": _stats(singles, ref.text),
        "text_short_batch_cosine_vs_torch_full_context": _stats(short_out, ref.text[: len(short_texts)]),
        "text_short_batch_positions_run": f"{short.needed} of {short.ids.shape[1]}",
        "text_short_vs_full_length_max_abs": float(np.abs(short_out - short_full).max()),
    }
    if reference is not None:
        checks["image_cosine_vs_fp32"] = _stats(image, reference["image"])
        checks["text_cosine_vs_fp32"] = _stats(text, reference["text"])
    checks["outputs"] = {"image": image, "text": text}
    return checks


def _stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": round(float(cos.min()), 7), "mean": round(float(cos.mean()), 7)}
