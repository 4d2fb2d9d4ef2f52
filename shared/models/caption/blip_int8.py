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


def quantize_blip(model: Any) -> Any:
    """A dynamic-int8 copy of a BLIP model (Linear layers); the fp32 model is left as it was."""
    with warnings.catch_warnings():  # torch 2.10+ flags its quantized tensors as deprecated, on every layer
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear}, dtype=torch.qint8, inplace=False
        )
    return quantized.eval()


def check_int8(fp32: Any, int8: Any, processor: Any, steps: int = CHECK_STEPS) -> Int8CaptionCheck:
    """Compare int8 with fp32 over the first `steps` new tokens on the sample photos."""
    names, photos = check_photos()
    pixels = processor(images=photos, return_tensors="pt")["pixel_values"]
    fixed = {"max_new_tokens": steps, "min_new_tokens": steps, "num_beams": 1, "do_sample": False}
    with torch.inference_mode():
        ref = fp32.generate(pixel_values=pixels, **fixed)
        own = int8.generate(pixel_values=pixels, **fixed)
        prefix = ref[:, :-1]  # logits at each position predict the next of fp32's tokens
        want = fp32(pixel_values=pixels, input_ids=prefix).logits[:, -steps:].float()
        got = int8(pixel_values=pixels, input_ids=prefix).logits[:, -steps:].float()
    cosine = torch.nn.functional.cosine_similarity(want, got, dim=-1)
    picked = got.argmax(-1, keepdim=True)
    exact = float((want.argmax(-1, keepdim=True) == picked).float().mean())
    gap = want.max(-1, keepdim=True).values - want.gather(-1, picked)  # how much worse fp32 rates int8's pick
    agreement = float((gap <= TIE_MARGIN).float().mean())
    free = float((ref[:, -steps:] == own[:, -steps:]).float().mean()) if own.shape == ref.shape else 0.0
    cos_min = float(cosine.min())
    return Int8CaptionCheck(
        photos=names,
        steps=steps,
        token_agreement=round(agreement, 4),
        exact_token_agreement=round(exact, 4),
        free_running_agreement=round(free, 4),
        logits_cosine_min=round(cos_min, 6),
        logits_cosine_mean=round(float(cosine.mean()), 6),
        passed=agreement >= MIN_TOKEN_AGREEMENT and cos_min >= MIN_LOGITS_COSINE,
    )
