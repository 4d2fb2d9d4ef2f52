"""The CLIP models a process serves, built from CLIP_MODELS: one backend per family, picked by `match`.

MINDSIGHT_CLIP_RUNTIME picks torch or ONNX Runtime per model: `onnx` requires the export
MINDSIGHT_MODELS_DIR/onnx/<label>[-int8] (`mindsight models export`), `auto` uses it when present and
torch otherwise, `torch` never uses it. A CLIP_MODELS entry may also name an export folder directly.
Nothing on the ONNX path imports torch.
"""

from __future__ import annotations

import enum
import json
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from shared.device import DevicePref, onnx_providers, set_threads
from shared.errors import ConfigError
from shared.models.base import ImageEmbedder, RuntimeInfo, TextEmbedder
from shared.models.clip.runtime import OnnxChoice, choose_onnx_export
from shared.models.onnx.manifest import is_onnx_export
from shared.models.store.sources import MODELS_FIX, hub_offline, looks_like_path, require_local, resolve_local
from shared.settings import ClipSettings, ModelStoreSettings

log = logging.getLogger(__name__)

TOWERS = ("image", "text")


class ClipFamily(enum.StrEnum):
    """Which library a CLIP model's weights are laid out for."""

    TRANSFORMERS = "transformers"
    OPEN_CLIP = "open_clip"
    ONNX = "onnx"
    """A `mindsight models export` folder (either family's towers as ONNX graphs, run by onnxruntime)."""


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


def detect_family(source: str, models_dir: Path | None = None) -> ClipFamily:
    """The family a source belongs to (see CLIP_MODELS in .env.example for the accepted forms)."""
    if source.startswith(("hf-hub:", "local-dir:")):
        return ClipFamily.OPEN_CLIP
    local = resolve_local(source, models_dir)
    if local is not None:
        return _local_family(local)
    if looks_like_path(source):
        require_local(source, models_dir, "CLIP model folder")  # raises with both places looked at
    name, sep, _ = source.partition(":")
    if not sep:
        name, sep, _ = source.partition("/")
    if sep and _is_open_clip_name(name):
        return ClipFamily.OPEN_CLIP
    return ClipFamily.TRANSFORMERS


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
    towers the caller will use: ONNX models open only those now and the other on first use (torch models
    hold both regardless).
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
    choice = choose_onnx_export(label, source, clip, store, runtime or clip.runtime)
    if choice is not None:
        return _load_onnx(label, choice, clip, device, threads, device_pref, towers)
    set_threads(threads)
    return _load_torch(label, source, clip, store, device)


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
    family = detect_family(source, store.models_dir)
    local = resolve_local(source, store.models_dir)
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
                    from shared.models.clip.openclip_backend import (
                        open_clip_embedders,
                        parse_open_clip_source,
                    )

                    spec = parse_open_clip_source(source, local, store.models_dir)
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


def _local_family(path: Path) -> ClipFamily:
    if is_onnx_export(path):
        return ClipFamily.ONNX
    if path.is_file():
        raise ConfigError(
            f"{path} is a single checkpoint file: name its open_clip architecture too, e.g. ViT-B-32:{path}"
        )
    if (path / "open_clip_config.json").is_file():
        return ClipFamily.OPEN_CLIP
    config = path / "config.json"
    if config.is_file():
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {config}: {exc}") from exc
        if model_type != "clip":
            raise ConfigError(
                f"{path} holds a {model_type!r} transformers model, not a CLIP model (model_type clip)"
            )
        return ClipFamily.TRANSFORMERS
    raise ConfigError(
        f"{path} is neither a transformers CLIP folder (config.json) nor an open_clip one "
        "(open_clip_config.json)"
    )


def _is_open_clip_name(name: str) -> bool:
    import open_clip

    return name in open_clip.list_models()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or repr(exc)
    return text.splitlines()[0][:500]
