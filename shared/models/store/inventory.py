"""`mindsight models ls`: what is configured, what is on disk and where, and the ONNX exports' checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.errors import ConfigError, MindsightError
from shared.models.clip.runtime import choose_onnx_export
from shared.models.onnx.manifest import (
    MANIFEST_NAME,
    OnnxManifest,
    default_export_root,
    export_dir,
    read_manifest,
)
from shared.models.store.download import Wanted, is_present, plan
from shared.settings import Settings


def inventory(settings: Settings) -> dict[str, Any]:
    """Rows for the configured models (`models`) and every export found (`exports`), JSON-ready."""
    root = default_export_root(settings.store.models_dir)
    models = [_model_row(w, settings, root) for w in plan(settings, {"clip", "caption", "face"})]
    return {"models_dir": str(settings.store.models_dir), "models": models, "exports": list_exports(root)}


def list_exports(root: Path) -> list[dict[str, Any]]:
    """Every export folder under `root`, readable or not."""
    if not root.is_dir():
        return []
    rows = []
    for manifest_path in sorted(root.glob(f"*/{MANIFEST_NAME}")):
        folder = manifest_path.parent
        try:
            rows.append(_export_row(folder, read_manifest(folder)))
        except ConfigError as exc:
            rows.append({"folder": str(folder), "error": str(exc)})
    return rows


def export_summary(manifest: OnnxManifest) -> str:
    """One line on an export's checks: cosine to torch (fp32) or to fp32 (int8)."""
    checks = manifest.checks
    if not checks:
        return "unchecked"
    if not checks.get("passed"):
        return "FAILED checks"
    if manifest.precision == "int8":
        image, text = checks["image_cosine_vs_fp32"], checks["text_cosine_vs_fp32"]
        return f"cos vs fp32 ≥ {image['min']:.4f} img, {text['min']:.4f} txt"
    image, text = checks["image_cosine_vs_torch"], checks["text_cosine_vs_torch_full_context"]
    return f"cos vs torch ≥ {min(image['min'], text['min']):.5f}"


def _model_row(wanted: Wanted, settings: Settings, root: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": wanted.kind, "name": wanted.name, "source": wanted.source}
    try:
        present = is_present(wanted)
    except (MindsightError, ImportError) as exc:
        present, row["error"] = False, str(exc)
    row["on_disk"] = _where(wanted, present)
    if wanted.kind == "clip":
        row["runtime"] = _runtime(wanted, settings)
        for precision in ("fp32", "int8"):
            folder = export_dir(root, wanted.name, precision)
            try:
                manifest = read_manifest(folder)
                row[f"onnx_{precision}"] = export_summary(manifest)
            except ConfigError:
                row[f"onnx_{precision}"] = "-"
    return row


def _where(wanted: Wanted, present: bool) -> str:
    if present:
        return str(wanted.target) if wanted.target else "open_clip cache"
    if wanted.how == "none" and wanted.target is None:
        return wanted.source
    if wanted.how == "hub" and _in_hf_cache(wanted.source.removeprefix("hf-hub:")):
        return "HF cache (HF_HOME)"
    return "missing"


def _runtime(wanted: Wanted, settings: Settings) -> str:
    try:
        clip = settings.clip
        choice = choose_onnx_export(wanted.name, wanted.source, clip, settings.store, clip.runtime)
    except ConfigError as exc:
        return f"error: {exc}"
    if choice is None:
        return "torch fp32"
    return f"onnx {choice.manifest.precision}"


def _in_hf_cache(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    for name in ("config.json", "open_clip_config.json"):
        try:
            if isinstance(try_to_load_from_cache(repo, name), str):
                return True
        except Exception:  # an invalid repo id: not in the cache, whatever it is
            return False
    return False


def _export_row(folder: Path, manifest: OnnxManifest) -> dict[str, Any]:
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return {
        "folder": str(folder),
        "label": manifest.label,
        "precision": manifest.precision,
        "source": manifest.source,
        "family": manifest.family,
        "dim": manifest.dim,
        "opset": manifest.opset,
        "checks": export_summary(manifest),
        "size_mb": round(size / 1e6, 1),
    }
