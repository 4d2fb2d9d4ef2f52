"""int8 by default on CPU: `mindsight models download` also makes each CLIP model's checked int8 export.

The workers take an int8 export only when its manifest says it passed its checks against fp32
(`runtime.verified_int8_export`); here is where those exports are made, once, at download time. A failed
check installs nothing, so fp32 keeps running, and the outcome says so.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.device import resolve_device
from shared.models.clip.runtime import verified_int8_export
from shared.models.onnx.export import EXPORT_DEPENDENCIES, ExportError, export_clip
from shared.models.onnx.manifest import default_export_root, export_dir, is_onnx_export, read_manifest
from shared.models.store.source import ClipFamily, parse_source
from shared.settings import Settings

Status = Literal["present", "exported", "fp32-kept", "failed", "skipped"]


@dataclass(frozen=True)
class Int8Outcome:
    """What happened to one CLIP model's int8 export."""

    label: str
    status: Status
    detail: str

    @property
    def loud(self) -> bool:
        """True when the operator must hear of it: the CPU runs fp32 against the default's intent."""
        return self.status in ("fp32-kept", "failed")


def int8_not_wanted(settings: Settings) -> str | None:
    """Why this deployment gets no int8 CLIP exports (None: it does, as the default on CPU)."""
    clip = settings.clip
    if clip.precision == "fp32":
        return "MINDSIGHT_CLIP_PRECISION=fp32"
    if clip.runtime == "torch":
        return "MINDSIGHT_CLIP_RUNTIME=torch"
    if settings.worker.device == "cuda":
        return "MINDSIGHT_DEVICE=cuda (fp32 runs on the GPU)"
    can_export = all(importlib.util.find_spec(m) for m in EXPORT_DEPENDENCIES)
    if settings.worker.device == "auto" and can_export and resolve_device("auto").startswith("cuda"):
        return "a GPU is present (fp32 runs on it)"
    return None


def ensure_cpu_int8(settings: Settings, progress: Callable[[str], None]) -> list[Int8Outcome]:
    """Make the checked int8 export of each configured CLIP model lacking one; never raises ExportError."""
    missing = [m for m in EXPORT_DEPENDENCIES if importlib.util.find_spec(m) is None]
    store = settings.store
    root = default_export_root(store.models_dir)
    out: list[Int8Outcome] = []
    for spec in settings.clip.specs():
        label, source = spec.label, spec.source
        if parse_source(source, store.models_dir, "clip", label).family is ClipFamily.ONNX:
            out.append(Int8Outcome(label, "skipped", "CLIP_MODELS names an export folder; export its source"))
            continue
        if verified_int8_export(label, source, store, quiet=True) is not None:
            out.append(Int8Outcome(label, "present", str(export_dir(root, label, "int8"))))
            continue
        if missing:
            out.append(Int8Outcome(
                label, "failed",
                f"cannot make the int8 export here (missing {', '.join(missing)}; the slim image): run "
                "`mindsight models download` in the full image on the same MINDSIGHT_MODELS_DIR",
            ))  # fmt: skip
            continue
        try:
            results = export_clip(label, source, settings.clip, store, root, int8=True, progress=progress)
        except ExportError as exc:
            out.append(_after_failure(label, source, root, exc))
            continue
        int8 = results[-1]
        image = int8.checks["image_cosine_vs_fp32"]
        out.append(Int8Outcome(
            label, "exported",
            f"{int8.folder} (image cosine to fp32 on {len(int8.checks['photos'])} photos: min "
            f"{image['min']}, mean {image['mean']}; required >= {int8.checks['min_cosine_required']})",
        ))  # fmt: skip
    return out


def _after_failure(label: str, source: str, root: Path, exc: ExportError) -> Int8Outcome:
    """fp32-kept when the fp32 export got installed and only int8 failed, else failed."""
    fp32 = export_dir(root, label, "fp32")
    if is_onnx_export(fp32) and read_manifest(fp32).source == source:
        return Int8Outcome(label, "fp32-kept", f"{exc}; the workers keep the checked fp32 export {fp32}")
    return Int8Outcome(label, "failed", f"{exc}; the workers keep torch fp32")
