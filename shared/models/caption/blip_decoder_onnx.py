"""BLIP's text decoder on ONNX Runtime int8, with its KV cache, inside the int8 caption model.

Two graphs, exported from the fp32 decoder at download and quantised like every other graph:

- `cross-int8.onnx`: the image's hidden states -> each layer's cross-attention keys and values, computed
  once per photo (the 577 image tokens never change while a caption grows);
- `decoder-int8.onnx`: one decoding step. New tokens and every layer's cached self-attention keys and
  values in; next-token logits and the grown caches out. Caches are one input per layer: a stacked cache
  cost a 21 MB Split copy per step.

`OnnxTextDecoder` stands in for `BlipTextLMHeadModel`: BLIP's own `generate` and `forward` call it as
they call the torch decoder, so the captioner and the int8 check against fp32 run unchanged. It decodes
greedily (what the captioner runs: CAPTION_NUM_BEAMS=1); beam search stays with torch.

Measured (BLIP-base shapes, 16 new tokens, `make bench-caption` and the prototype it came from): torch
dynamic int8 472-501 ms per caption's decoding at one thread, 338-351 at two; this 283-287 and 219-224.
The decoder's one-token steps are matrix-vector products, which onnxruntime runs about 3x faster from
pre-packed weights (int8 MatMul per step 29.5 -> 9.5 ms), so its sessions keep pre-packing
(`open_session(prepack=True)`), unlike the batched image graphs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.models.caption.blip_graphs import (
    CROSS_GRAPH,
    DECODER_GRAPH,
    HIDDEN,
    IDS,
    LOGITS,
    DecoderGraphs,
    Heads,
    cross_name,
    past_name,
    present_name,
)

__all__ = [
    "CROSS_GRAPH",
    "DECODER_GRAPH",
    "CrossKeys",
    "DecoderStep",
    "OnnxTextDecoder",
    "export_decoder_int8",
]


class DecoderStep(nn.Module):
    """`BlipTextLMHeadModel` as one step over `n` new tokens after `p` cached ones (for export).

    Inputs: input ids [b, n], then per layer the cached self-attention keys, then values [b, h, p, d], then
    the cross-attention keys, then values [b, h, s, d]. Outputs: logits [b, n, vocab], then per layer the
    keys, then values [b, h, p + n, d]. Same arithmetic as transformers' BLIP text decoder (checked in
    tests: identical greedy tokens and logits in fp32)."""

    def __init__(self, decoder: Any) -> None:
        super().__init__()
        self.decoder = decoder
        self.geo = Heads.of(decoder.config)

    def _attend(self, attention: Any, hidden: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        b, n, _ = hidden.shape
        h, d = self.geo.heads, self.geo.size
        query = attention.self.query(hidden).view(b, n, h, d).transpose(1, 2)
        scores = torch.matmul(query, keys.transpose(-1, -2)) / math.sqrt(d)
        if mask is not None:
            scores = scores + mask
        context = torch.matmul(torch.softmax(scores, dim=-1), values).transpose(1, 2).reshape(b, n, h * d)
        return attention.output(context, hidden)

    def forward(self, input_ids: torch.Tensor, *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n_layers, h, d = self.geo.layers, self.geo.heads, self.geo.size
        past_k, past_v = caches[:n_layers], caches[n_layers : 2 * n_layers]
        cross_k, cross_v = caches[2 * n_layers : 3 * n_layers], caches[3 * n_layers :]
        bert = self.decoder.bert
        b, n = input_ids.shape
        p = past_k[0].shape[2]
        positions = torch.arange(n) + p
        hidden = (
            bert.embeddings.word_embeddings(input_ids) + bert.embeddings.position_embeddings(positions)[None]
        )
        hidden = bert.embeddings.LayerNorm(hidden)
        # causal: new token i (at position p + i) sees every cached token and the new ones up to itself
        allowed = torch.arange(p + n)[None, :] <= (torch.arange(n)[:, None] + p)
        mask = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[None, None]
        keys_out, values_out = [], []
        for i, layer in enumerate(bert.encoder.layer):
            own = layer.attention.self
            keys = torch.cat([past_k[i], own.key(hidden).view(b, n, h, d).transpose(1, 2)], dim=2)
            values = torch.cat([past_v[i], own.value(hidden).view(b, n, h, d).transpose(1, 2)], dim=2)
            keys_out.append(keys)
            values_out.append(values)
            hidden = self._attend(layer.attention, hidden, keys, values, mask)
            hidden = self._attend(layer.crossattention, hidden, cross_k[i], cross_v[i], None)
            hidden = layer.output(layer.intermediate(hidden), hidden)
        return (self.decoder.cls(hidden), *keys_out, *values_out)


class CrossKeys(nn.Module):
    """Image hidden states [b, s, e] -> per layer the cross-attention keys, then values [b, h, s, d]."""

    def __init__(self, decoder: Any) -> None:
        super().__init__()
        self.decoder = decoder
        self.geo = Heads.of(decoder.config)

    def forward(self, image_embeds: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, s, _ = image_embeds.shape
        h, d = self.geo.heads, self.geo.size
        keys, values = [], []
        for layer in self.decoder.bert.encoder.layer:
            cross = layer.crossattention.self
            keys.append(cross.key(image_embeds).view(b, s, h, d).transpose(1, 2))
            values.append(cross.value(image_embeds).view(b, s, h, d).transpose(1, 2))
        return (*keys, *values)


def export_decoder_int8(decoder: Any, folder: Path, image_tokens: int, *, quantize: bool = True) -> None:
    """Export the fp32 `decoder` (BLIP's `text_decoder`) as the two graphs, quantised into `folder`
    (`quantize=False`: the fp32 graphs under the same names, which tests compare with transformers)."""
    import shutil

    from shared.models.onnx.export import DEFAULT_OPSET, quantize_graph
    from shared.models.onnx.towers import torchscript_export

    geo = Heads.of(decoder.config)
    width = int(decoder.config.encoder_hidden_size)
    n = geo.layers
    past = [past_name(i, k) for k in ("key", "value") for i in range(n)]
    cross = [cross_name(i, k) for k in ("key", "value") for i in range(n)]
    present = [present_name(i, k) for k in ("key", "value") for i in range(n)]
    axes: dict[str, dict[int, str]] = {IDS: {0: "batch", 1: "new"}, LOGITS: {0: "batch", 1: "new"}}
    axes |= {name: {0: "batch", 2: "past"} for name in past}
    axes |= {name: {0: "batch", 2: "image"} for name in cross}
    axes |= {name: {0: "batch", 2: "total"} for name in present}
    example = (
        torch.zeros(1, 2, dtype=torch.long),
        *[torch.zeros(1, geo.heads, 3, geo.size) for _ in past],
        *[torch.zeros(1, geo.heads, image_tokens, geo.size) for _ in cross],
    )
    hidden = torch.zeros(1, image_tokens, width)
    cross_axes = {HIDDEN: {0: "batch", 1: "image"}} | {c: {0: "batch", 2: "image"} for c in cross}
    scratch = folder / ".fp32-decoder"
    scratch.mkdir()
    try:
        step, keys = DecoderStep(decoder).eval(), CrossKeys(decoder).eval()
        torchscript_export(step, example, scratch / DECODER_GRAPH, [IDS, *past, *cross], [LOGITS, *present],
                           axes, DEFAULT_OPSET)  # fmt: skip
        torchscript_export(keys, (hidden,), scratch / CROSS_GRAPH, [HIDDEN], cross, cross_axes, DEFAULT_OPSET)
        for graph in (DECODER_GRAPH, CROSS_GRAPH):
            if quantize:
                quantize_graph(scratch / graph, folder / graph)
            else:
                shutil.move(scratch / graph, folder / graph)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class OnnxTextDecoder(nn.Module):
    """Stands in for BLIP's `text_decoder`: `generate` (greedy, KV cache) and `forward` (logits of every
    position, as the int8 check feeds fp32's tokens) on the two onnxruntime graphs in `folder`
    (`blip_graphs.DecoderGraphs`, which the torch-free captioner runs too)."""

    def __init__(self, folder: Path, config: Any, generation_config: Any, threads: int) -> None:
        super().__init__()
        self.folder = folder
        self.config = config
        self.generation_config = generation_config
        self.graphs = DecoderGraphs(folder, Heads.of(config), threads)

    def forward(self, input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor, **_: Any) -> Any:
        from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions

        ids = input_ids.detach().to("cpu", torch.long).numpy()
        feed = self.graphs.cross_feed(_numpy(encoder_hidden_states))
        logits, *_caches = self.graphs.run(ids, self.graphs.empty(ids.shape[0]), feed)
        return CausalLMOutputWithCrossAttentions(logits=torch.from_numpy(logits))

    def generate(
        self,
        input_ids: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        eos_token_id: int,
        pad_token_id: int,
        max_length: int | None = None,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
        num_beams: int | None = None,
        do_sample: bool = False,
        **_: Any,
    ) -> torch.Tensor:
        """Greedy decoding with transformers' stopping rules: at most `max_new_tokens` (else `max_length`
        counting the prompt), `eos_token_id` barred before `min_new_tokens`, finished rows padded."""
        if (num_beams or 1) != 1 or do_sample:
            raise ValueError("the onnxruntime BLIP decoder decodes greedily; beam search runs on torch")
        prompt = input_ids.detach().to("cpu", torch.long).numpy()
        limit = max_length if max_length is not None else self.generation_config.max_length
        new_tokens = max_new_tokens if max_new_tokens is not None else limit - prompt.shape[1]
        hidden = _numpy(encoder_hidden_states)
        tokens = self.graphs.greedy(
            prompt, hidden, eos_token_id, pad_token_id, new_tokens, min_new_tokens or 0
        )
        return torch.from_numpy(tokens)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())
