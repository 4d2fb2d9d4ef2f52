"""The two CLIP towers as torch modules fit for `torch.onnx.export`, for both families.

Each tower ends with the L2 normalisation, so the graphs output unit vectors. The text tower takes token
ids of any length up to the context: positions are `arange(L)`, the causal mask is built (sliced) for L
inside the graph and the pooled token is picked in the graph the way the source model picks it, so feeding
only the positions up to the longest end-of-text token gives the full-context result.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from shared.models.onnx.exportable import ExportableClip

IMAGE_INPUT = "pixel_values"
TEXT_INPUT = "input_ids"
OUTPUT = "embeds"
"""Graph input/output names; `OnnxClip` reads the names from the graphs, these are what we write."""

MAX_BATCH = 4096


class UnitTower(torch.nn.Module):
    """A backend's feature module followed by the L2 normalisation: the graph outputs unit vectors."""

    def __init__(self, features: torch.nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.features(x).float(), dim=-1)


def export_image_tower(backbone: ExportableClip, path: Path, opset: int) -> None:
    """Write the image tower to `path` with a dynamic batch dimension."""
    height, width = backbone.transform.output_size if backbone.transform else (224, 224)
    example = torch.zeros(2, 3, height, width)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    export_module(
        UnitTower(backbone.image_features_module()).eval(), example, path, IMAGE_INPUT, {0: batch}, opset
    )


def export_text_tower(backbone: ExportableClip, path: Path, opset: int) -> None:
    """Write the text tower to `path` with dynamic batch and sequence length (up to the context)."""
    tokens = backbone.tokenize(["a photo of a cat", "a dog"])
    example = torch.from_numpy(tokens.ids[:, : max(tokens.needed, 3)].copy())
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    length = torch.export.Dim("length", min=1, max=backbone.context_length)
    tower = UnitTower(backbone.text_features_module()).eval()
    export_module(tower, example, path, TEXT_INPUT, {0: batch, 1: length}, opset)


def export_module(
    module: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    name: str,
    dims: dict[int, Any],
    opset: int,
    *,
    torchscript: bool = False,
) -> None:
    """`torch.onnx.export` of `module(example)` to `path` (weights beside it, EXTERNAL_WEIGHTS): one input
    `name` with the dynamic `dims` (`torch.export.Dim`s), one output `OUTPUT`; the exporter's chatter
    silenced. `torchscript`: torch's earlier (TorchScript) exporter instead of torch.export, for graphs whose
    patterns onnxruntime fuses only in that exporter's spelling (BLIP's erf GELU: blip_vision_onnx)."""
    if torchscript:
        axes = {name: {axis: dim.__name__ for axis, dim in dims.items()}, OUTPUT: {0: "batch"}}
        torchscript_export(module, (example,), path, [name], [OUTPUT], axes, opset)
        return
    arg = next(iter(_forward_arg_names(module)))
    with torch.inference_mode(False), torch.no_grad(), _quiet("onnxscript", "onnx_ir", "torch.onnx"):
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=True,
            opset_version=opset,
            input_names=[name],
            output_names=[OUTPUT],
            dynamic_shapes={arg: dims},
            external_data=True,  # EXTERNAL_WEIGHTS (shared.models.onnx.session)
            verbose=False,
        )


def torchscript_export(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    axes: dict[str, dict[int, str]],
    opset: int,
) -> None:
    """`torch.onnx.export` with torch's TorchScript exporter (named inputs and outputs, dynamic `axes`),
    its deprecation and tracer warnings silenced: what BLIP's graphs are exported with (`export_module`'s
    `torchscript`, blip_decoder_onnx)."""
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.9+ marks this exporter deprecated; the tracer warns too
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=opset, input_names=inputs,
            output_names=outputs, dynamic_axes=axes,
        )  # fmt: skip


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """The exporter's INFO chatter (hundreds of lines per graph) off for the duration."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _forward_arg_names(module: torch.nn.Module) -> list[str]:
    return list(inspect.signature(module.forward).parameters)
