"""BLIP on CPU in int8: torch dynamic quantisation of every Linear layer, checked against fp32 at load.

Dynamic quantisation stores the weights of the vision encoder's and the text decoder's Linear layers
(attention, MLP, cross-attention, LM head) as int8 and quantises activations per batch; the decoder keeps
its KV cache, since `generate` runs unchanged. The patch embedding (a convolution), layer norms and
embeddings stay fp32. Before the int8 model replaces fp32 it must reproduce fp32 on the sample photos:
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch

from shared.models.onnx.checks import check_photos

CHECK_STEPS = 8
"""New tokens compared per photo: the first words of a caption, where a divergence would change it most."""
MIN_TOKEN_AGREEMENT = 0.9
"""Share of the steps where int8 picks fp32's greedy token, or one fp32 rates within `TIE_MARGIN` of it,
both fed fp32's caption so far (teacher forcing), over all photos. Below it int8 writes other captions,
not the same ones slightly rounded."""
TIE_MARGIN = 0.5
"""Logits (a probability ratio of 1.65): where fp32 itself barely prefers its token, int8 picking the
runner-up is rounding, not a different caption. Random weights have flat logits and many such near-ties
(BLIP-base shapes: exact agreement 0.875, within the margin 1.0); the exact share is reported too."""
MIN_LOGITS_COSINE = 0.99
"""Lowest cosine between int8's and fp32's next-token logits over every photo and step."""


@dataclass(frozen=True)
class Int8CaptionCheck:
    """What the load-time check measured, and whether int8 may replace fp32."""

    photos: list[str]
    steps: int
    token_agreement: float
    exact_token_agreement: float
    free_running_agreement: float
    """Share of generated tokens equal when each model continues its own caption (KV cache path); reported,
    not thresholded: one early flip changes every token after it."""
    logits_cosine_min: float
    logits_cosine_mean: float
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Fp32Reference:
    """What fp32 gives on the sample photos: its first greedy tokens and the logits that chose them."""

    photos: list[str]
    pixels: torch.Tensor
    tokens: torch.Tensor
    logits: torch.Tensor
    steps: int


def quantize_blip(model: Any, *, inplace: bool = False) -> Any:
    """Dynamic int8 of a BLIP model's Linear layers: a copy, or `model` itself when `inplace` (which spares
    a second fp32 copy, ~1 GB for BLIP-base, at load)."""
    with warnings.catch_warnings():  # torch 2.10+ flags its quantized tensors as deprecated, on every layer
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear}, dtype=torch.qint8, inplace=inplace
        )
    return quantized.eval()


def fp32_reference(fp32: Any, processor: Any, steps: int = CHECK_STEPS) -> Fp32Reference:
    """Run fp32 on the sample photos for `steps` new tokens; taken before the model is quantised."""
    names, photos = check_photos()
    pixels = processor(images=photos, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        tokens = fp32.generate(pixel_values=pixels, **_fixed(steps))
        logits = fp32(pixel_values=pixels, input_ids=tokens[:, :-1]).logits[:, -steps:].float()
    return Fp32Reference(names, pixels, tokens, logits, steps)


def check_int8(int8: Any, ref: Fp32Reference) -> Int8CaptionCheck:
    """Compare int8 with the fp32 reference over its first steps, fed fp32's tokens so far."""
    steps = ref.steps
    with torch.inference_mode():
        own = int8.generate(pixel_values=ref.pixels, **_fixed(steps))
        got = int8(pixel_values=ref.pixels, input_ids=ref.tokens[:, :-1]).logits[:, -steps:].float()
    want = ref.logits
    cosine = torch.nn.functional.cosine_similarity(want, got, dim=-1)
    picked = got.argmax(-1, keepdim=True)
    exact = float((want.argmax(-1, keepdim=True) == picked).float().mean())
    gap = want.max(-1, keepdim=True).values - want.gather(-1, picked)  # how much worse fp32 rates int8's pick
    agreement = float((gap <= TIE_MARGIN).float().mean())
    ref_new, own_new = ref.tokens[:, -steps:], own[:, -steps:]
    free = float((ref_new == own_new).float().mean()) if own.shape == ref.tokens.shape else 0.0
    cos_min = float(cosine.min())
    return Int8CaptionCheck(
        photos=ref.photos,
        steps=steps,
        token_agreement=round(agreement, 4),
        exact_token_agreement=round(exact, 4),
        free_running_agreement=round(free, 4),
        logits_cosine_min=round(cos_min, 6),
        logits_cosine_mean=round(float(cosine.mean()), 6),
        passed=agreement >= MIN_TOKEN_AGREEMENT and cos_min >= MIN_LOGITS_COSINE,
    )


def _fixed(steps: int) -> dict[str, Any]:
    """Exactly `steps` greedy new tokens, whatever the model's end token does."""
    return {"max_new_tokens": steps, "min_new_tokens": steps, "num_beams": 1, "do_sample": False}
