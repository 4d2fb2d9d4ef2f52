"""The manifest of a CLIP model exported to ONNX: what the runtime needs to load it without torch.

An export folder holds `image.onnx`, `text.onnx`, `tokenizer.json` and `mindsight_onnx.json` (this
manifest). The manifest names the original source (so callbacks keep reporting it), the image transform,
the tokenizer's rules, the export checks and, for int8, the measured deviation from fp32.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from shared.errors import ConfigError
from shared.models.clip.preprocess import ClipImageTransform

MANIFEST_NAME = "mindsight_onnx.json"
FORMAT_VERSION = 1
"""Bumped when the layout changes incompatibly; older exports are refused with a re-export hint."""

EXPORT_FIX = "run `mindsight models export`"
"""How an operator makes a missing or stale export; ends every such error."""

Precision = Literal["fp32", "int8"]


@dataclass(frozen=True)
class TokenizerSpec:
    """How texts become the ids the text graph takes."""

    file: str
    clean: Literal["open_clip", "open_clip_whitespace", "none"]
    """open_clip: ftfy + HTML unescape + lower case before the BPE (open_clip's `lower` clean);
    open_clip_whitespace: the same without lower case (its HF tokenizers' `whitespace` clean); none: as is."""
    sot_id: int
    eot_id: int
    pad_id: int
    pool: Literal["argmax", "eos", "masked"]
    """Which token the graph pools: the highest id (OpenAI CLIP) or the first end-of-text id; `masked`: a
    bidirectional tower that masks the pad id itself and pools as its model does (Chinese-CLIP's [CLS],
    XLM-RoBERTa's mean), so every real token is needed."""


@dataclass(frozen=True)
class OnnxManifest:
    """Everything `OnnxClip` reads from an export folder besides the graphs and the tokenizer file."""

    label: str
    source: str
    family: str
    dim: int
    precision: Precision
    opset: int
    context_length: int
    transform: ClipImageTransform
    tokenizer: TokenizerSpec
    image_file: str = "image.onnx"
    text_file: str = "text.onnx"
    normalized: bool = True
    """Both graphs end with an L2 normalisation, so their outputs are unit vectors already."""
    checks: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        data["transform"] = transform_to_dict(self.transform)
        return json.dumps(data, indent=2, sort_keys=False) + "\n"


def transform_to_dict(t: ClipImageTransform) -> dict[str, Any]:
    """A JSON-ready form of a `ClipImageTransform` (resample by name)."""
    return {
        "resize": list(t.resize) if isinstance(t.resize, tuple) else t.resize,
        "crop": list(t.crop) if t.crop else None,
        "mean": list(t.mean),
        "std": list(t.std),
        "resample": Image.Resampling(t.resample).name.lower(),
        "crop_rounding": t.crop_rounding,
        "rescale": t.rescale,
    }


def transform_from_dict(d: dict[str, Any]) -> ClipImageTransform:
    """The inverse of `transform_to_dict`."""
    resize = d["resize"]
    crop = d["crop"]
    mean, std = d["mean"], d["std"]
    return ClipImageTransform(
        resize=(int(resize[0]), int(resize[1])) if isinstance(resize, list) else resize,
        crop=(int(crop[0]), int(crop[1])) if crop else None,
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
        resample=Image.Resampling[str(d["resample"]).upper()],
        crop_rounding=d["crop_rounding"],
        rescale=float(d["rescale"]),
    )


def is_onnx_export(path: Path) -> bool:
    """True when `path` is a folder holding an export manifest."""
    return path.is_dir() and (path / MANIFEST_NAME).is_file()


def read_manifest(folder: Path) -> OnnxManifest:
    """The manifest of an export folder; ConfigError when missing, unreadable, or of another format."""
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{folder} is not an ONNX export (no {MANIFEST_NAME}); {EXPORT_FIX}") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; {EXPORT_FIX} again") from exc
    if data.get("format") != FORMAT_VERSION:
        raise ConfigError(
            f"{path} has format {data.get('format')!r}, this version reads {FORMAT_VERSION}; "
            f"{EXPORT_FIX} again"
        )
    try:
        return OnnxManifest(
            **{
                **data,
                "transform": transform_from_dict(data["transform"]),
                "tokenizer": TokenizerSpec(**data["tokenizer"]),
            }
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path} is incomplete or malformed ({exc}); {EXPORT_FIX} again") from exc


def write_manifest(folder: Path, manifest: OnnxManifest) -> Path:
    """Write the manifest last, so a folder with one holds a finished export."""
    path = folder / MANIFEST_NAME
    path.write_text(manifest.to_json(), encoding="utf-8")
    return path


def export_dir(root: Path, label: str, precision: Precision) -> Path:
    """`<root>/<label>` for fp32, `<root>/<label>-int8` for int8."""
    if not label or "/" in label or "\\" in label or label in (".", ".."):
        raise ConfigError(f"CLIP label {label!r} cannot name an export folder")
    return root / (label if precision == "fp32" else f"{label}-int8")


def default_export_root(models_dir: Path) -> Path:
    """Where exports live unless told otherwise: MINDSIGHT_MODELS_DIR/onnx."""
    return models_dir.expanduser() / "onnx"
