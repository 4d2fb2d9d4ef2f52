"""The public interface `mindsight models export` needs from a torch CLIP backend; each backend implements it.

The exporter never reads a backend's private attributes: a backend hands over its two towers as torch
modules (un-normalised features; the exporter adds the L2 normalisation) and writes its own tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from shared.errors import ConfigError
from shared.models.clip.backbone import ClipBackbone, TokenBatch
from shared.models.clip.preprocess import ClipImageTransform
from shared.models.onnx.manifest import TokenizerSpec

if TYPE_CHECKING:
    import torch

TOKENIZER_FILE = "tokenizer.json"
"""Where a backend writes its tokenizer inside an export folder."""


@runtime_checkable
class ExportableClip(Protocol):
    """A loaded torch CLIP model that can be exported to ONNX."""

    source: str
    family: str
    context_length: int
    transform: ClipImageTransform | None

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        """Texts -> token ids padded to the context length (see `ClipBackbone.tokenize`)."""
        ...

    def image_features_module(self) -> torch.nn.Module:
        """pixel_values [N, 3, H, W] -> image features [N, D] (not normalised)."""
        ...

    def text_features_module(self) -> torch.nn.Module:
        """input_ids [N, L], any L up to the context length -> the features of the full-context forward."""
        ...

    def export_tokenizer(self, folder: Path) -> TokenizerSpec:
        """Write `TOKENIZER_FILE` into `folder` and say how the ONNX runtime must use it."""
        ...


def as_exportable(backbone: ClipBackbone) -> ExportableClip:
    """`backbone` when its backend implements the export interface; ConfigError otherwise."""
    if not isinstance(backbone, ExportableClip):
        raise ConfigError(f"{backbone.source}: the {backbone.family} backend cannot be exported to ONNX")
    return backbone
