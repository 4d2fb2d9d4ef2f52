"""Which CLIP models run on ONNX Runtime: MINDSIGHT_CLIP_RUNTIME, MINDSIGHT_CLIP_PRECISION and the exports.

Decided from files and settings only (no torch import), so a torch-less image can serve exports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ConfigError
from shared.models.onnx.manifest import (
    OnnxManifest,
    default_export_root,
    export_dir,
    read_manifest,
)
from shared.models.store.source import ClipFamily, parse_source
from shared.settings import ClipSettings, ModelStoreSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnnxChoice:
    """An export to serve a label from, and the source callbacks report for it."""

    folder: Path
    source: str
    manifest: OnnxManifest


def export_command(label: str, precision: str) -> str:
    """The command that creates the export a label needs."""
    return f"mindsight models export --label {label}" + (" --int8" if precision == "int8" else "")


def choose_onnx_export(
    label: str, source: str, clip: ClipSettings, store: ModelStoreSettings, runtime: str
) -> OnnxChoice | None:
    """The export to load for `label`, or None for the torch backends; ConfigError when onnx cannot be met."""
    if runtime not in ("auto", "torch", "onnx"):
        raise ConfigError(f"MINDSIGHT_CLIP_RUNTIME must be auto, torch or onnx, got {runtime!r}")
    parsed = parse_source(source, store.models_dir, "clip", label)
    local = parsed.local
    if local is not None and parsed.family is ClipFamily.ONNX:
        if runtime == "torch":
            return None  # the torch loader refuses it with a message naming both settings
        manifest = read_manifest(local)
        return OnnxChoice(local, manifest.source, manifest)  # report the model, not the export's folder
    if runtime == "torch":
        if clip.precision == "int8":
            raise ConfigError(
                "MINDSIGHT_CLIP_PRECISION=int8 needs ONNX Runtime, but MINDSIGHT_CLIP_RUNTIME=torch; set "
                "MINDSIGHT_CLIP_RUNTIME=auto or onnx (or MINDSIGHT_CLIP_PRECISION=fp32)"
            )
        return None
    folder = export_dir(default_export_root(store.models_dir), label, clip.precision)
    command = export_command(label, clip.precision)
    if clip.precision not in parsed.exports:
        if runtime == "onnx":
            raise ConfigError(
                f"MINDSIGHT_CLIP_RUNTIME=onnx but CLIP model {label!r} has no {clip.precision} ONNX export "
                f"at {folder}: run `{command}` (with the torch extra installed) or set "
                "MINDSIGHT_CLIP_RUNTIME=auto"
            )
        level = logging.WARNING if clip.precision == "int8" else logging.INFO
        log.log(level, "CLIP model %s: no ONNX export at %s, using torch fp32 (`%s`)", label, folder, command)
        return None
    manifest = read_manifest(folder)
    if manifest.source != source:
        message = (
            f"the ONNX export {folder} was made from {manifest.source!r} but CLIP_MODELS gives {label}="
            f"{source}; run `{command}` again"
        )
        if runtime == "onnx":
            raise ConfigError(message)
        log.warning("CLIP model %s: %s; using torch meanwhile", label, message)
        return None
    return OnnxChoice(folder, source, manifest)


def clip_needs_torch(clip: ClipSettings, store: ModelStoreSettings) -> bool:
    """True unless every configured CLIP model will run from an ONNX export (then torch is never
    imported: importing it alone costs ~0.5 GB of RSS)."""
    return any(choose_onnx_export(s.label, s.source, clip, store, clip.runtime) is None for s in clip.specs())
