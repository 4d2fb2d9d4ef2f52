"""The onnxruntime graphs of BLIP's int8 folder, run without torch: names, geometry, greedy decoding.

The int8 folder (`blip_int8_file`) holds, when `models download` could export them, the vision encoder
(`vision-int8.onnx`: pixel values -> the image's hidden states) and the text decoder as two graphs
(`blip_decoder_onnx`): `cross-int8.onnx` (hidden states -> each layer's cross-attention keys and values,
once per photo) and `decoder-int8.onnx` (one step: new tokens plus every layer's cached self-attention keys
and values in, logits and the grown caches out). This module is what runs them: the torch stand-ins
(`OnnxVisionEncoder`, `OnnxTextDecoder`, used by the int8 check and beam-free torch generate) and the
torch-free captioner (`blip_onnx_captioner`) share it, so both decode the same way. It imports numpy and
onnxruntime only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

VISION_GRAPH = "vision-int8.onnx"
"""The quantised vision encoder in the int8 folder (its weights in `vision-int8.onnx.data` beside it)."""
VISION_INPUT = "pixel_values"
DECODER_GRAPH = "decoder-int8.onnx"
CROSS_GRAPH = "cross-int8.onnx"
IDS = "input_ids"
HIDDEN = "image_embeds"
LOGITS = "logits"
REMAKE = "run `mindsight models download --caption` to make the int8 caption model again"
"""How an operator fixes an int8 graph onnxruntime cannot open."""


def past_name(i: int, kind: str) -> str:
    return f"past_{kind}_{i}"


def cross_name(i: int, kind: str) -> str:
    return f"cross_{kind}_{i}"


def present_name(i: int, kind: str) -> str:
    return f"present_{kind}_{i}"


@dataclass(frozen=True)
class Heads:
    """The text decoder's attention geometry."""

    layers: int
    heads: int
    size: int
    """Width of one head."""

    @classmethod
    def of(cls, config: Any) -> Heads:
        """From a BLIP text config (transformers' object, or anything with its three attributes)."""
        heads = int(config.num_attention_heads)
        return cls(int(config.num_hidden_layers), heads, int(config.hidden_size) // heads)


class VisionGraph:
    """Pixel values [b, 3, s, s] -> the image's hidden states [b, tokens, width], on onnxruntime int8."""

    def __init__(self, graph: Path, threads: int) -> None:
        from shared.models.onnx.session import open_session

        self.graph = graph
        self.session = open_session(self.graph, ["CPUExecutionProvider"], threads, REMAKE, int8=True)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        (hidden,) = self.session.run(None, {VISION_INPUT: np.ascontiguousarray(pixels, dtype=np.float32)})
        return np.asarray(hidden)


class DecoderGraphs:
    """The text decoder's two graphs in `folder`, and greedy decoding with its KV cache."""

    def __init__(self, folder: Path, heads: Heads, threads: int) -> None:
        from shared.models.onnx.session import open_session

        self.folder = folder
        self.geo = heads
        # one-token steps are matrix-vector products: pre-packed int8 weights run them ~3x faster
        self.step = open_session(
            folder / DECODER_GRAPH, ["CPUExecutionProvider"], threads, REMAKE, prepack=True
        )
        self.cross = open_session(
            folder / CROSS_GRAPH, ["CPUExecutionProvider"], threads, REMAKE, prepack=True
        )

    def cross_feed(self, hidden: np.ndarray) -> dict[str, np.ndarray]:
        """Each layer's cross-attention keys and values of the image's hidden states, as the step's inputs."""
        outputs = self.cross.run(None, {HIDDEN: np.ascontiguousarray(hidden, dtype=np.float32)})
        n = self.geo.layers
        return {cross_name(i, "key"): outputs[i] for i in range(n)} | {
            cross_name(i, "value"): outputs[n + i] for i in range(n)
        }

    def empty(self, batch: int) -> list[np.ndarray]:
        """Caches of no tokens yet."""
        shape = (batch, self.geo.heads, 0, self.geo.size)
        return [np.zeros(shape, np.float32) for _ in range(2 * self.geo.layers)]

    def run(self, ids: np.ndarray, caches: list[np.ndarray], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One step: logits of `ids` [b, n] after the cached tokens, then the grown caches."""
        n = self.geo.layers
        step = {IDS: ids} | {past_name(i, "key"): caches[i] for i in range(n)}
        step |= {past_name(i, "value"): caches[n + i] for i in range(n)}
        result: list[np.ndarray] = self.step.run(None, feed | step)
        return result

    def greedy(
        self,
        prompt: np.ndarray,
        hidden: np.ndarray,
        eos_token_id: int,
        pad_token_id: int,
        new_tokens: int,
        min_new_tokens: int = 0,
    ) -> np.ndarray:
        """Greedy decoding with transformers' stopping rules: at most `new_tokens` after `prompt` [b, p],
        `eos_token_id` barred before `min_new_tokens`, rows that finished padded with `pad_token_id`;
        the prompt and the new tokens [b, p + generated]."""
        feed = self.cross_feed(hidden)
        caches = self.empty(prompt.shape[0])
        ids, out = prompt.astype(np.int64), [prompt.astype(np.int64)]
        finished = np.zeros(prompt.shape[0], dtype=bool)
        for step in range(max(new_tokens, 0)):
            logits, *caches = self.run(ids, caches, feed)
            scores = logits[:, -1, :]
            if step < min_new_tokens and 0 <= eos_token_id < scores.shape[1]:
                scores[:, eos_token_id] = -np.inf
            chosen = np.where(finished, pad_token_id, scores.argmax(-1))
            out.append(chosen[:, None])
            finished |= chosen == eos_token_id
            if finished.all():
                break
            ids = chosen[:, None].astype(np.int64)
        return np.concatenate(out, axis=1)
