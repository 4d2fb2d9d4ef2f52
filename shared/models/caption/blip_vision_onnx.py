"""BLIP's vision encoder on ONNX Runtime int8, inside the int8 caption model made at download.

The vision encoder (a ViT-B/16 at 384 px: ~110 GFLOP per photo) is half of a caption's time on a CPU, and
onnxruntime's int8 MatMuls run it about twice as fast as torch's dynamic int8 Linear layers (BLIP-base
shapes, one thread, batch 1: 270 ms against 460-610 ms; fp32 820-890 ms either way). The text decoder stays
on torch dynamic int8, where `generate` keeps its KV cache. `OnnxVisionEncoder` is a torch module answering
the way `BlipVisionModel` does, so BLIP's own `generate` and `forward` (and the int8 check against fp32)
run unchanged with it in place of `model.vision_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from shared.models.caption.blip_graphs import VISION_GRAPH, VISION_INPUT, VisionGraph

__all__ = ["VISION_GRAPH", "OnnxVisionEncoder", "VisionFeatures", "export_vision_int8"]

TORCHSCRIPT_EXPORT = True
"""Export with torch's TorchScript exporter: onnxruntime fuses the encoder's erf GELU (one `Gelu` kernel per
layer) in the graph it writes, not in torch.export's spelling (Div, Erf, Add, Mul, Mul over 577 x 3072 per
layer), and transposes less: int8 encoder, BLIP-base shapes, one thread, 252-265 ms against 331-352 ms
(onnxruntime's profiler: GELU 14 ms against ~55, transposes 9 against 18). Same outputs either way."""


class VisionFeatures(torch.nn.Module):
    """`BlipVisionModel` -> its last hidden state (what the text decoder cross-attends to), for export."""

    def __init__(self, vision_model: torch.nn.Module) -> None:
        super().__init__()
        self.vision_model = vision_model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_model(pixel_values=pixel_values).last_hidden_state


def export_vision_int8(model: Any, folder: Path) -> Path:
    """Export `model.vision_model` (fp32) to ONNX and quantise it into `folder`/VISION_GRAPH.

    The fp32 graph is written to a scratch folder inside `folder` and removed after quantisation.
    """
    import shutil

    from shared.models.onnx.export import DEFAULT_OPSET, quantize_graph
    from shared.models.onnx.towers import MAX_BATCH, export_module

    size = int(model.config.vision_config.image_size)
    scratch = folder / ".fp32"
    scratch.mkdir()
    try:
        fp32 = scratch / "vision.onnx"
        example = torch.zeros(2, 3, size, size)
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        features = VisionFeatures(model.vision_model).eval()
        opset = DEFAULT_OPSET
        export_module(
            features, example, fp32, VISION_INPUT, {0: batch}, opset, torchscript=TORCHSCRIPT_EXPORT
        )
        out = folder / VISION_GRAPH
        quantize_graph(fp32, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


class OnnxVisionEncoder(torch.nn.Module):
    """Stands in for `BlipVisionModel`: pixel values in, `BaseModelOutputWithPooling` out, run by the int8
    graph (`blip_graphs.VisionGraph`). Only the last hidden state is computed (all captioning uses)."""

    def __init__(self, graph: Path, threads: int) -> None:
        super().__init__()
        self.runner = VisionGraph(graph, threads)
        self.graph = graph

    def forward(self, pixel_values: torch.Tensor, **_: Any) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        hidden = self.runner(pixel_values.detach().to("cpu", torch.float32).numpy())
        return BaseModelOutputWithPooling(last_hidden_state=torch.from_numpy(hidden), pooler_output=None)
