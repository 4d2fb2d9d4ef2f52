"""The two CLIP towers as torch modules fit for `torch.onnx.export`, for both families.

Each tower ends with the L2 normalisation, so the graphs output unit vectors. The text tower takes token
ids of any length up to the context: positions are `arange(L)`, the causal mask is built (sliced) for L
inside the graph and the pooled token is picked in the graph the way the source model picks it, so feeding
only the positions up to the longest end-of-text token gives the full-context result.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from shared.errors import ConfigError
from shared.models.clip.backbone import ClipBackbone

IMAGE_INPUT = "pixel_values"
TEXT_INPUT = "input_ids"
OUTPUT = "embeds"
"""Graph input/output names; `OnnxClip` reads the names from the graphs, these are what we write."""

MAX_BATCH = 4096
SINGLE_FILE_LIMIT = 1_800_000_000
"""Bytes of weights above which a graph keeps them in an external .data file (protobuf's 2 GB cap)."""


class ImageTower(torch.nn.Module):
    """pixel_values [N, 3, H, W] -> unit embeddings [N, D]."""

    def __init__(self, backbone: ClipBackbone) -> None:
        super().__init__()
        self.family = backbone.family
        self.model: Any = _torch_model(backbone)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.family == "transformers":
            out: Any = self.model.get_image_features(pixel_values=pixel_values)
            out = out if isinstance(out, torch.Tensor) else out.pooler_output
        else:
            out = self.model.encode_image(pixel_values)
        return torch.nn.functional.normalize(out.float(), dim=-1)


class TextTower(torch.nn.Module):
    """input_ids [N, L] (any L up to the context length) -> unit embeddings [N, D]."""

    def __init__(self, backbone: ClipBackbone) -> None:
        super().__init__()
        self.family = backbone.family
        self.model: Any = _torch_model(backbone)
        self.causal: Any = None
        if self.family == "open_clip":
            # The tower the torch backend itself uses on truncated ids; None when truncation is not exact.
            self.causal = getattr(backbone, "_tower", None)
            if self.causal is None:
                raise ConfigError(
                    f"{backbone.source}: its text tower is not a causal, end-of-text pooled CLIP "
                    "transformer, the only kind the ONNX export supports"
                )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.family == "transformers":
            out: Any = self.model.get_text_features(input_ids=input_ids)
            out = out if isinstance(out, torch.Tensor) else out.pooler_output
        else:
            out = self.causal.encode(input_ids)
        return torch.nn.functional.normalize(out.float(), dim=-1)


def export_image_tower(backbone: ClipBackbone, path: Path, opset: int) -> None:
    """Write the image tower to `path` with a dynamic batch dimension."""
    height, width = backbone.transform.output_size if backbone.transform else (224, 224)
    example = torch.zeros(2, 3, height, width)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    _export(ImageTower(backbone).eval(), example, path, IMAGE_INPUT, {0: batch}, opset)


def export_text_tower(backbone: ClipBackbone, path: Path, opset: int) -> None:
    """Write the text tower to `path` with dynamic batch and sequence length (up to the context)."""
    tokens = backbone.tokenize(["a photo of a cat", "a dog"])
    example = torch.from_numpy(tokens.ids[:, : max(tokens.needed, 3)].copy())
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    length = torch.export.Dim("length", min=1, max=backbone.context_length)
    _export(TextTower(backbone).eval(), example, path, TEXT_INPUT, {0: batch, 1: length}, opset)


def _export(
    module: torch.nn.Module, example: torch.Tensor, path: Path, name: str, dims: dict[int, Any], opset: int
) -> None:
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
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
            external_data=weight_bytes > SINGLE_FILE_LIMIT,
            verbose=False,
        )


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


def _torch_model(backbone: ClipBackbone) -> torch.nn.Module:
    model = getattr(backbone, "_model", None)
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"{backbone.source}: no loaded torch model to export (family {backbone.family})")
    return model
