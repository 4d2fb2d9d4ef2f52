"""The CLIP models a process serves, built from CLIP_MODELS: one backend per family, picked by `match`.

MINDSIGHT_CLIP_RUNTIME picks torch or ONNX Runtime per model: `onnx` requires the export
MINDSIGHT_MODELS_DIR/onnx/<label>[-int8] (`mindsight models export`), `auto` uses it when present and
torch otherwise, `torch` never uses it. A CLIP_MODELS entry may also name an export folder directly.
Nothing on the ONNX path imports torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from shared.device import DevicePref, onnx_providers, set_threads
from shared.errors import ConfigError
from shared.models.base import ImageEmbedder, RuntimeInfo, TextEmbedder
from shared.models.clip.backbone import ClipBackbone, ClipImageEmbedder
from shared.models.clip.runtime import OnnxChoice, choose_onnx_export, expects_gpu
from shared.models.store.source import MODELS_FIX, ClipFamily, ModelSource, hub_offline, parse_source
from shared.settings import ClipSettings, ModelStoreSettings

log = logging.getLogger(__name__)

TOWERS = ("image", "text")


@dataclass
class ClipModel:
    """One configured CLIP model: the label the gallery knows, and its two loaded towers."""

    label: str
    source: str
    family: ClipFamily
    image: ImageEmbedder
    text: TextEmbedder
    dim: int

    @property
    def runtime_info(self) -> RuntimeInfo:
        """Runtime and device, shared by both towers."""
        return self.image.runtime_info

    @property
    def backbone(self) -> ClipBackbone:
        """The loaded model both towers share."""
        if not isinstance(self.image, ClipImageEmbedder):
            raise ConfigError(f"CLIP model {self.label!r}: its towers share no backbone")
        return self.image.backbone


def detect_family(source: str, models_dir: Path | None = None) -> ClipFamily:
    """The family a source belongs to (see CLIP_MODELS in .env.example for the accepted forms)."""
    return _family(parse_source(source, models_dir), models_dir)


def _family(parsed: ModelSource, models_dir: Path | None) -> ClipFamily:
    if parsed.family is None:
        parsed.require_local("CLIP model folder", models_dir)  # raises with both places looked at
    assert parsed.family is not None
    return parsed.family


def load_clip_models(
    clip: ClipSettings,
    store: ModelStoreSettings,
    device: str,
    threads: int = 1,
    device_pref: DevicePref | None = None,
    towers: Collection[str] = TOWERS,
) -> dict[str, ClipModel]:
    """Load every CLIP_MODELS entry (in order, eagerly) and check each produces the configured dim.

    `device` is the resolved torch device; `device_pref` (MINDSIGHT_DEVICE) lets ONNX models use CUDA
    where torch cannot see it (no torch installed); without it ONNX follows `device`. `towers` names the
    towers the caller will use: ONNX models open only those now and the other on first use; torch models
    load whole, and without "image" free their image tower once loaded (it cannot be used afterwards).
    """
    models: dict[str, ClipModel] = {}
    for spec in clip.specs():
        models[spec.label] = load_clip_model(
            spec.label, spec.source, clip, store, device, threads=threads, device_pref=device_pref,
            towers=towers,
        )  # fmt: skip
    return models


def load_clip_model(
    label: str,
    source: str,
    clip: ClipSettings,
    store: ModelStoreSettings,
    device: str,
    *,
    threads: int = 1,
    device_pref: DevicePref | None = None,
    runtime: str | None = None,
    towers: Collection[str] = TOWERS,
) -> ClipModel:
    """One CLIP model on the runtime MINDSIGHT_CLIP_RUNTIME (or `runtime`) selects for it, loaded."""
    gpu = expects_gpu(device, device_pref or ("auto" if device.startswith("cuda") else "cpu"))
    choice = choose_onnx_export(label, source, clip, store, runtime or clip.runtime, gpu=gpu)
    if choice is not None:
        return _load_onnx(label, choice, clip, device, threads, device_pref, towers)
    set_threads(threads)
    model = _load_torch(label, source, clip, store, device)
    if "image" not in towers:
        model.backbone.drop_image_tower()
    return model


def _load_onnx(
    label: str,
    choice: OnnxChoice,
    clip: ClipSettings,
    device: str,
    threads: int,
    device_pref: DevicePref | None,
    towers: Collection[str],
) -> ClipModel:
    from shared.models.clip.onnx_backend import onnx_clip_embedders

    pref: DevicePref = device_pref or ("auto" if device.startswith("cuda") else "cpu")
    image, text = onnx_clip_embedders(
        choice.folder,
        onnx_providers(pref),
        threads=threads,
        max_tokens=clip.max_text_tokens,
        source=choice.source,
        eager=towers,
        torch_sees_cuda=device.startswith("cuda"),
    )
    start = time.perf_counter()
    image.load()
    text.load()
    return _checked(label, choice.source, ClipFamily.ONNX, image, text, clip, time.perf_counter() - start)


def _load_torch(
    label: str, source: str, clip: ClipSettings, store: ModelStoreSettings, device: str
) -> ClipModel:
    parsed = parse_source(source, store.models_dir, "clip", label)
    family = _family(parsed, store.models_dir)
    local = parsed.local
    start = time.perf_counter()
    image: ImageEmbedder
    text: TextEmbedder
    try:
        with hub_offline(store.offline):
            match family:
                case ClipFamily.TRANSFORMERS:
                    from shared.models.clip.transformers_backend import transformers_clip_embedders

                    image, text = transformers_clip_embedders(
                        str(local or source),
                        device,
                        max_tokens=clip.max_text_tokens,
                        local_files_only=store.offline or local is not None,
                    )
                case ClipFamily.OPEN_CLIP:
                    from shared.models.clip.openclip_backend import open_clip_embedders, open_clip_spec

                    spec = open_clip_spec(parsed, store.models_dir)
                    image, text = open_clip_embedders(
                        spec, device, max_tokens=clip.max_text_tokens, source=source
                    )
                case ClipFamily.ONNX:  # choose_onnx_export takes these; only runtime=torch gets here
                    raise ConfigError(
                        f"CLIP model {label!r}: {source} is an ONNX export but MINDSIGHT_CLIP_RUNTIME=torch; "
                        "name the original model in CLIP_MODELS or set MINDSIGHT_CLIP_RUNTIME=auto"
                    )
            image.load()
            text.load()
    except ConfigError:
        raise
    except Exception as exc:  # the libraries raise OSError, ValueError, RuntimeError, hub errors...
        where = "offline mode: only local files and the HF cache were tried" if store.offline else "hub tried"
        raise ConfigError(
            f"CLIP model {label!r}: cannot load {source!r} with the {family} backend ({where}): "
            f"{type(exc).__name__}: {_first_line(exc)}. If it is not on disk, {MODELS_FIX}"
        ) from exc
    return _checked(label, source, family, image, text, clip, time.perf_counter() - start)


def _checked(
    label: str,
    source: str,
    family: ClipFamily,
    image: ImageEmbedder,
    text: TextEmbedder,
    clip: ClipSettings,
    seconds: float,
) -> ClipModel:
    """The loaded model, once its towers agree with each other and with the configured dimension."""
    expected = clip.expected_dim(label)
    if image.dim != text.dim:
        raise ConfigError(f"CLIP model {label!r} ({source}): image dim {image.dim} != text dim {text.dim}")
    if image.dim != expected:
        configured = (
            f"CLIP_MODEL_DIMS gives {label}={expected}"
            if expected != clip.embedding_dim
            else f"PROCESSING_EMBEDDING_DIM={expected}"
        )
        raise ConfigError(
            f"CLIP model {label!r} ({source}) produces {image.dim}-d vectors but {configured}; set "
            f"CLIP_MODEL_DIMS={label}={image.dim} (or PROCESSING_EMBEDDING_DIM) if the gallery's vector "
            "column has that size, or configure a model that produces it"
        )
    info = image.runtime_info
    log.info(
        "loaded CLIP model label=%s source=%s family=%s runtime=%s device=%s precision=%s dim=%d in %.2fs",
        label,
        source,
        family,
        info.runtime,
        info.device,
        info.precision,
        image.dim,
        seconds,
    )
    return ClipModel(label=label, source=source, family=family, image=image, text=text, dim=image.dim)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or repr(exc)
    return text.splitlines()[0][:500]
