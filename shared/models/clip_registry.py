"""The CLIP models a process serves, built from CLIP_MODELS: one backend per family, picked by `match`."""

from __future__ import annotations

import enum
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ConfigError
from shared.models.base import ImageEmbedder, RuntimeInfo, TextEmbedder
from shared.models.model_sources import MODELS_FIX, hub_offline, looks_like_path, require_local, resolve_local
from shared.settings import ClipSettings, ModelStoreSettings

log = logging.getLogger(__name__)


class ClipFamily(enum.StrEnum):
    """Which library a CLIP model's weights are laid out for."""

    TRANSFORMERS = "transformers"
    OPEN_CLIP = "open_clip"


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
    clip: ClipSettings, store: ModelStoreSettings, device: str, threads: int = 1
) -> dict[str, ClipModel]:
    """Load every CLIP_MODELS entry (in order, eagerly) and check each produces the configured dim."""
    from shared.device import set_threads

    set_threads(threads)
    models: dict[str, ClipModel] = {}
    for spec in clip.specs():
        models[spec.label] = _load_one(spec.label, spec.source, clip, store, device)
    return models


def _load_one(
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
                    from shared.models.clip_transformers import transformers_clip_embedders

                    image, text = transformers_clip_embedders(
                        str(local or source),
                        device,
                        max_tokens=clip.max_text_tokens,
                        local_files_only=store.offline or local is not None,
                    )
                case ClipFamily.OPEN_CLIP:
                    from shared.models.clip_open_clip import open_clip_embedders, parse_open_clip_source

                    spec = parse_open_clip_source(source, local, store.models_dir)
                    image, text = open_clip_embedders(
                        spec, device, max_tokens=clip.max_text_tokens, source=source
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
    seconds = time.perf_counter() - start
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
    log.info(
        "loaded CLIP model label=%s source=%s family=%s device=%s dim=%d in %.2fs",
        label,
        source,
        family,
        device,
        image.dim,
        seconds,
    )
    return ClipModel(label=label, source=source, family=family, image=image, text=text, dim=image.dim)


def _local_family(path: Path) -> ClipFamily:
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
