"""Which CLIP models run on ONNX Runtime: MINDSIGHT_CLIP_RUNTIME, MINDSIGHT_CLIP_PRECISION and the exports.

Decided from files and settings only (no torch import), so a torch-less image can serve exports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from shared.device import CUDA_PROVIDER, DevicePref, onnx_providers
from shared.errors import ConfigError
from shared.models.onnx.manifest import (
    OnnxManifest,
    Precision,
    default_export_root,
    export_dir,
    is_onnx_export,
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
    label: str, source: str, clip: ClipSettings, store: ModelStoreSettings, runtime: str, *, gpu: bool = False
) -> OnnxChoice | None:
    """The export to load for `label`, or None for the torch backends; ConfigError when onnx cannot be met.

    MINDSIGHT_CLIP_PRECISION=auto takes the int8 export on CPU (`gpu` False) when its manifest says it
    passed its checks against fp32 and it was made from this source; otherwise it is fp32.
    """
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
    if clip.precision == "auto" and not gpu:
        verified = verified_int8_export(label, source, store)
        if verified is not None:
            return verified
    precision: Precision = "int8" if clip.precision == "int8" else "fp32"
    folder = export_dir(default_export_root(store.models_dir), label, precision)
    command = export_command(label, precision)
    if precision not in parsed.exports:
        if runtime == "onnx":
            raise ConfigError(
                f"MINDSIGHT_CLIP_RUNTIME=onnx but CLIP model {label!r} has no {precision} ONNX export "
                f"at {folder}: run `{command}` (with the torch extra installed) or set "
                "MINDSIGHT_CLIP_RUNTIME=auto"
            )
        level = logging.WARNING if precision == "int8" else logging.INFO
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


def verified_int8_export(
    label: str, source: str, store: ModelStoreSettings, *, quiet: bool = False
) -> OnnxChoice | None:
    """The int8 export of `label` when it exists, was made from `source` and passed its checks against
    fp32; None (with a warning saying why and what to run, unless `quiet`) otherwise."""
    folder = export_dir(default_export_root(store.models_dir), label, "int8")
    level = logging.DEBUG if quiet else logging.WARNING
    if not is_onnx_export(folder):
        log.log(
            level,
            "CLIP model %s: no int8 export at %s, so fp32 runs on this CPU; `mindsight models download` "
            "makes and checks one (MINDSIGHT_CLIP_PRECISION=fp32 silences this)", label, folder,
        )  # fmt: skip
        return None
    try:
        manifest = read_manifest(folder)
    except ConfigError as exc:
        log.log(level, "CLIP model %s: int8 export unusable (%s); fp32 runs", label, exc)
        return None
    checks = manifest.checks
    if manifest.source != source or checks.get("passed") is not True:
        why = "was made from " + repr(manifest.source) if manifest.source != source else "has no passed check"
        log.log(
            level,
            "CLIP model %s: the int8 export %s %s; fp32 runs (`mindsight models download` redoes it)",
            label, folder, why,
        )  # fmt: skip
        return None
    image = checks.get("image_cosine_vs_fp32", {})
    log.log(
        logging.DEBUG if quiet else logging.INFO,
        "CLIP model %s: int8 on CPU (image cosine to fp32 at export: min %s)", label, image.get("min"),
    )  # fmt: skip
    return OnnxChoice(folder, source, manifest)


def expects_gpu(device: str, pref: DevicePref) -> bool:
    """Whether CLIP runs on a GPU: torch's resolved `device`, or onnxruntime offering CUDA for `pref`."""
    return device.startswith("cuda") or onnx_providers(pref)[0] == CUDA_PROVIDER


def clip_needs_torch(clip: ClipSettings, store: ModelStoreSettings, pref: DevicePref = "cpu") -> bool:
    """True unless every configured CLIP model will run from an ONNX export (then torch is never
    imported: importing it alone costs ~0.5 GB of RSS)."""
    gpu = expects_gpu("cpu", pref)
    return any(
        choose_onnx_export(spec.label, spec.source, clip, store, clip.runtime, gpu=gpu) is None
        for spec in clip.specs()
    )
