"""Export a configured CLIP model to ONNX (both towers, tokenizer, manifest), check it, optionally int8.

Each export is built in a hidden staging folder next to its destination and moved into place only after
its checks pass, so a folder with a manifest always holds a complete, checked export.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shared.errors import ConfigError, MindsightError
from shared.models.onnx.checks import TorchReference, compare_export, torch_reference
from shared.models.onnx.exportable import TOKENIZER_FILE, as_exportable
from shared.models.onnx.manifest import OnnxManifest, Precision, export_dir, write_manifest
from shared.models.store.source import ClipFamily, parse_source
from shared.models.store.staging import staged_folder
from shared.settings import ClipSettings, ModelStoreSettings

EXPORT_DEPENDENCIES = ("torch", "onnx", "onnxscript")
"""What making an export imports (the torch extra); the slim image lacks them and only runs exports."""
DEFAULT_OPSET = 18
FP32_MIN_COSINE = 0.9999
"""An fp32 export below this cosine to torch on any check photo or text is refused."""
INT8_MIN_COSINE = 0.99
"""Floor for int8 vs fp32, per check photo (image) and per check text: below it quantisation broke the model
rather than rounded it (typical: 0.9997 on ViT-B/32 and ViT-L/14). A failed check installs nothing, so the
workers keep fp32."""
QUANTIZATION = {"op_types": ["MatMul"], "reduce_range": True, "per_channel": True, "weight_type": "QInt8"}
"""Dynamic int8 of the MatMul weights only. reduce_range (7-bit weights) avoids the VPMADDUBSW overflow of
AVX2 CPUs without VNNI; per-channel scales bring ViT-B-32's cosine to fp32 from 0.9996 to 0.9998 at no
measured cost in speed."""

Progress = Callable[[str], None]


class ExportError(MindsightError):
    """An export that failed its checks; nothing was installed."""


@dataclass(frozen=True)
class ExportResult:
    """One installed export folder and what its checks measured."""

    label: str
    folder: Path
    precision: Precision
    checks: dict[str, Any]
    seconds: float


def export_clip(
    label: str,
    source: str,
    clip: ClipSettings,
    store: ModelStoreSettings,
    out_root: Path,
    *,
    int8: bool = False,
    opset: int = DEFAULT_OPSET,
    progress: Progress = lambda _: None,
) -> list[ExportResult]:
    """Export `label` (fp32, and int8 when asked) under `out_root`; ExportError if a check fails."""
    from shared.models.clip.registry import load_clip_model

    parsed = parse_source(source, store.models_dir, "clip", label)
    if parsed.family is ClipFamily.ONNX:
        raise ConfigError(
            f"CLIP model {label!r} is already an ONNX export ({parsed.local}); export its source"
        )
    start = time.perf_counter()
    progress(f"{label}: loading {source} with torch")
    # Always from torch fp32 with the model's whole context, whatever the workers are set to: the runtime
    # applies MINDSIGHT_MAX_TEXT_TOKENS itself.
    torch_clip = clip.model_copy(update={"runtime": "torch", "precision": "fp32", "max_text_tokens": 1 << 16})
    model = load_clip_model(label, source, torch_clip, store, "cpu", runtime="torch")
    backbone = model.backbone
    exportable = as_exportable(backbone)
    ref = torch_reference(backbone)
    out_root.mkdir(parents=True, exist_ok=True)
    fp32_dir = export_dir(out_root, label, "fp32")
    with staged_folder(fp32_dir) as tmp:
        progress(f"{label}: exporting the image tower (opset {opset})")
        from shared.models.onnx.towers import export_image_tower, export_text_tower

        export_image_tower(exportable, tmp / "image.onnx", opset)
        progress(f"{label}: exporting the text tower (dynamic length up to {backbone.context_length})")
        export_text_tower(exportable, tmp / "text.onnx", opset)
        assert backbone.transform is not None
        manifest = OnnxManifest(
            label=label,
            source=source,
            family=str(model.family),
            dim=model.dim,
            precision="fp32",
            opset=opset,
            context_length=backbone.context_length,
            transform=backbone.transform,
            tokenizer=exportable.export_tokenizer(tmp),
            versions=_versions(),
        )
        fp32_checks, outputs = _checked(tmp, manifest, ref, None, progress)
    results = [ExportResult(label, fp32_dir, "fp32", fp32_checks, time.perf_counter() - start)]
    if int8:
        start = time.perf_counter()
        int8_dir = export_dir(out_root, label, "int8")
        with staged_folder(int8_dir) as tmp:
            progress(f"{label}: quantising both towers to int8 (dynamic, MatMul weights)")
            for name in ("image.onnx", "text.onnx"):
                quantize_graph(fp32_dir / name, tmp / name)
            shutil.copy2(fp32_dir / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
            int8_manifest = replace(manifest, precision="int8")
            int8_checks, _ = _checked(tmp, int8_manifest, ref, outputs, progress)
        results.append(ExportResult(label, int8_dir, "int8", int8_checks, time.perf_counter() - start))
    return results


def _without_value_info(src: Path) -> Path:
    """`src` without its intermediate shape annotations (graph.value_info), written beside it so its
    external weights are shared, not copied; `src` itself when it has none. The quantiser re-infers every
    shape and refuses a graph whose annotation disagrees (torch 2.11's exporter annotated a ViT-L/14
    tensor 768 wide that is 1024), while the annotations are optional and ONNX Runtime ignores them."""
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    if not model.graph.value_info:
        return src
    del model.graph.value_info[:]
    bare = src.with_name(f"{src.stem}.bare{src.suffix}")
    onnx.save(model, str(bare))
    return bare


def quantize_graph(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of one graph with the `QUANTIZATION` settings."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint on the root logger each call
    bare = _without_value_info(src)
    try:
        quantize_dynamic(
            bare,
            dst,
            op_types_to_quantize=QUANTIZATION["op_types"],
            per_channel=True,
            reduce_range=True,
            weight_type=QuantType.QInt8,
            use_external_data_format=True,  # EXTERNAL_WEIGHTS (shared.models.onnx.session)
        )
    finally:
        root.setLevel(level)
        if bare != src:
            bare.unlink(missing_ok=True)
    # onnx writes the weights file owner-only; the graph beside it gets the umask's mode, as every other
    # file of the models volume does, so whoever may read the graph may read its weights.
    weights = dst.with_name(dst.name + ".data")
    if weights.is_file():
        shutil.copymode(dst, weights)


def _checked(
    folder: Path,
    manifest: OnnxManifest,
    ref: TorchReference,
    fp32_outputs: dict[str, Any] | None,
    progress: Progress,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the staged export against torch (and fp32), write the final manifest, or raise ExportError."""
    write_manifest(folder, manifest)  # the loader needs it to run the checks
    against = "torch" if fp32_outputs is None else "fp32 (and torch)"
    progress(f"{manifest.label}: checking {manifest.precision} against {against} on photos and texts")
    checks = compare_export(folder, ref, fp32_outputs)
    outputs = checks.pop("outputs")
    problems = [k for k in ("preprocess_equal", "tokenizer_ids_equal") if not checks[k]]
    keys: tuple[str, ...]
    if manifest.precision == "fp32":
        keys = (
            "image_cosine_vs_torch",
            "text_cosine_vs_torch_full_context",
            "text_one_by_one_cosine_vs_torch",
            "text_short_batch_cosine_vs_torch_full_context",
        )
        floor = FP32_MIN_COSINE
    else:
        keys = ("image_cosine_vs_fp32", "text_cosine_vs_fp32")
        floor = INT8_MIN_COSINE
        checks["quantization"] = QUANTIZATION
    problems += [f"{k} min {checks[k]['min']}" for k in keys if checks[k]["min"] < floor]
    checks.update(min_cosine_required=floor, passed=not problems)
    if problems:
        raise ExportError(
            f"{manifest.label} ({manifest.precision}) failed its export checks: {', '.join(problems)} "
            f"(threshold {floor}); nothing was installed"
        )
    write_manifest(folder, replace(manifest, checks=checks))
    return checks, outputs


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("torch", "onnx", "onnxruntime", "transformers", "open_clip_torch", "tokenizers"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out
