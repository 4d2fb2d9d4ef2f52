"""What a configured model source string means, decided once: `ModelSource`.

A CLIP_MODELS entry or CAPTION_MODEL_NAME is one of (see .env.example):
- a local folder or file, as given or under MINDSIGHT_MODELS_DIR (transformers, open_clip or ONNX export);
- `local-dir:/path` (an open_clip folder) or `hf-hub:org/repo` (an open_clip hub repo);
- `Name/tag` or `Name:tag` with a built-in open_clip architecture `Name` (a pretrained tag, or a checkpoint
  file such as `ViT-B-32:/srv/ckpt.pt`);
- anything else: a transformers repo id on the Hugging Face hub.

`parse_source` turns the string into a `ModelSource` (family, local path, download plan, exports present);
the loaders, `mindsight models download`/`ls`, the export and `dev run` all read that one object. Also
here: where a source is looked for on disk (`resolve_local`) and the offline switch for loads (`hub_offline`:
with MINDSIGHT_OFFLINE set nothing may try the network, including libraries such as open_clip that call
huggingface_hub without a `local_files_only` argument of their own). Nothing
here imports torch: open_clip architectures are read from its config files.
"""

from __future__ import annotations

import enum
import importlib.util
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shared.errors import ConfigError
from shared.models.clip.hf_kinds import hf_clip_kind
from shared.models.onnx.manifest import Precision, default_export_root, export_dir, is_onnx_export

MODELS_FIX = (
    "download it with `mindsight models download`, set MINDSIGHT_MODELS_DIR to the folder that holds it, "
    "or put a local path in CLIP_MODELS"
)
"""How an operator fixes a model that cannot be found; appended to every missing-model error."""


def looks_like_path(source: str) -> bool:
    """True for sources that can only mean a filesystem path (absolute, ./, ../, ~)."""
    return source.startswith(("/", "./", "../", "~", ".\\", "..\\")) or source in (".", "..")


def resolve_local(source: str, models_dir: Path | None) -> Path | None:
    """The existing file or folder `source` names: as given first, then under `models_dir`; else None."""
    if not source:
        return None
    given = Path(source).expanduser()
    if given.exists():
        return given.resolve()
    if models_dir is not None and not given.is_absolute():
        under = models_dir.expanduser() / given
        if under.exists():
            return under.resolve()
    return None


def require_local(source: str, models_dir: Path | None, what: str) -> Path:
    """`resolve_local`, or a ConfigError naming both places looked at and the fix."""
    found = resolve_local(source, models_dir)
    if found is None:
        places = [str(Path(source).expanduser())]
        if models_dir is not None and not Path(source).is_absolute():
            places.append(str(models_dir.expanduser() / source))
        raise ConfigError(f"{what} {source!r} not found (looked in {' and '.join(places)}); {MODELS_FIX}")
    return found


@contextmanager
def hub_offline(enabled: bool) -> Iterator[None]:
    """Make huggingface_hub refuse network access for the duration (no-op when not `enabled`)."""
    if not enabled:
        yield
        return
    from huggingface_hub import constants

    # huggingface_hub reads this flag on every request (constants.is_offline_mode), so flipping it here
    # also covers transformers and open_clip, which reach the hub through it.
    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


Kind = Literal["clip", "caption"]
Fetch = Literal["hub", "open_clip", "none"]

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""Weight files of a transformers repo (CLIP or BLIP); one of them makes a folder or cache entry complete."""
OPEN_CLIP_WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
)
"""Weight files of an hf-hub open_clip repo, in open_clip's order of preference."""
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
"""A `Name:tag` whose tag ends so (or starts with /, ., ~) names a checkpoint file, not a pretrained tag."""
HF_CONFIG = "config.json"
OPEN_CLIP_CONFIG = "open_clip_config.json"
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")


class ClipFamily(enum.StrEnum):
    """Which library a model's weights are laid out for."""

    TRANSFORMERS = "transformers"
    OPEN_CLIP = "open_clip"
    ONNX = "onnx"
    """A `mindsight models export` folder (either family's towers as ONNX graphs, run by onnxruntime)."""


@dataclass(frozen=True)
class ModelSource:
    """One configured source, parsed: what it is, where it is on disk, and how to fetch it."""

    raw: str
    kind: Kind
    family: ClipFamily | None
    """None only for a path-like source that does not exist (nothing to tell the family from)."""
    local: Path | None
    """The existing file or folder the source names (as given, or under MINDSIGHT_MODELS_DIR)."""
    fetch: Fetch
    """How `mindsight models download` gets it: a hub snapshot, open_clip's own cache, or not at all."""
    target: Path | None
    """Where it is (local) or where a download puts it; None for open_clip's cache."""
    hub_repo: str | None = None
    """The Hugging Face repo id (transformers repos and `hf-hub:` open_clip repos)."""
    open_clip_name: str | None = None
    """The built-in open_clip architecture of a `Name/tag` or `Name:checkpoint` source."""
    open_clip_pretrained: str | None = None
    """Its pretrained tag, or the checkpoint file for `Name:/path` sources."""
    exports: Mapping[Precision, Path] = field(default_factory=dict)
    """The ONNX exports present for the label (`mindsight models export`), by precision."""

    @property
    def is_checkpoint(self) -> bool:
        """True for `Name:/path/weights.pt`: an open_clip architecture with local weights."""
        return self.open_clip_pretrained is not None and _looks_like_checkpoint(self.open_clip_pretrained)

    def require_local(self, what: str, models_dir: Path | None) -> Path:
        """The local path, or a ConfigError naming the places looked at and the fix."""
        return self.local or require_local(self.raw, models_dir, what)

    def in_store(self) -> bool:
        """True when the source is complete where the loaders look first (its local folder or target)."""
        if self.fetch == "open_clip":
            return open_clip_tag_cached(self.open_clip_name or "", self.open_clip_pretrained or "")
        path = self.local or self.target
        return path is not None and is_complete(path)

    def on_disk(self) -> bool:
        """True when it loads without the network: in the store, or complete in the Hugging Face cache."""
        if self.in_store():
            return True
        if self.fetch != "hub" or self.hub_repo is None:
            return False
        if self.family is ClipFamily.OPEN_CLIP:
            return hub_cached(self.hub_repo, OPEN_CLIP_WEIGHT_FILES, need=OPEN_CLIP_CONFIG)
        return hub_cached(self.hub_repo, HF_WEIGHT_FILES, need=HF_CONFIG)


def parse_source(raw: str, models_dir: Path | None, kind: Kind = "clip", label: str = "") -> ModelSource:
    """Parse a configured source; ConfigError only for a local path that cannot be a model of `kind`."""
    raw = raw.strip()
    if not raw:
        raise ConfigError(f"empty {kind} model source")
    exports = _exports(label, models_dir) if kind == "clip" and label else {}
    local = resolve_local(raw, models_dir)
    if local is not None:
        family = local_family(local) if kind == "clip" else ClipFamily.TRANSFORMERS
        return ModelSource(raw, kind, family, local, "none", local, exports=exports)
    if looks_like_path(raw):
        return ModelSource(raw, kind, None, None, "none", Path(raw).expanduser(), exports=exports)
    hub_target = models_dir.expanduser() / raw if models_dir is not None else None
    if kind == "caption":
        return ModelSource(raw, kind, ClipFamily.TRANSFORMERS, None, "hub", hub_target, hub_repo=raw)
    if raw.startswith("local-dir:"):
        folder = Path(raw.removeprefix("local-dir:")).expanduser()
        found = folder if folder.exists() else None
        return ModelSource(raw, kind, ClipFamily.OPEN_CLIP, found, "none", folder, exports=exports)
    if raw.startswith("hf-hub:"):
        repo = raw.removeprefix("hf-hub:").strip("/")
        return ModelSource(
            raw, kind, ClipFamily.OPEN_CLIP, None, "hub", hub_target, hub_repo=repo, exports=exports
        )
    name, sep, tag = raw.partition(":")
    if not sep:
        name, sep, tag = raw.partition("/")
    if sep and tag and is_open_clip_name(name):
        if _looks_like_checkpoint(tag):
            checkpoint = resolve_local(tag, models_dir)
            return ModelSource(
                raw, kind, ClipFamily.OPEN_CLIP, checkpoint, "none", checkpoint or Path(tag).expanduser(),
                open_clip_name=name, open_clip_pretrained=str(checkpoint or tag), exports=exports,
            )  # fmt: skip
        return ModelSource(
            raw, kind, ClipFamily.OPEN_CLIP, None, "open_clip", None,
            open_clip_name=name, open_clip_pretrained=tag, exports=exports,
        )  # fmt: skip
    return ModelSource(
        raw, kind, ClipFamily.TRANSFORMERS, None, "hub", hub_target, hub_repo=raw, exports=exports
    )


def local_family(path: Path) -> ClipFamily:
    """The CLIP family of a local file or folder, from its files; ConfigError when it is none of them."""
    if is_onnx_export(path):
        return ClipFamily.ONNX
    if path.is_file():
        raise ConfigError(
            f"{path} is a single checkpoint file: name its open_clip architecture too, e.g. ViT-B-32:{path}"
        )
    if (path / OPEN_CLIP_CONFIG).is_file():
        return ClipFamily.OPEN_CLIP
    config = path / HF_CONFIG
    if config.is_file():
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {config}: {exc}") from exc
        hf_clip_kind(model_type, str(path))  # ConfigError for a transformers model that is not a CLIP
        return ClipFamily.TRANSFORMERS
    raise ConfigError(
        f"{path} is neither a transformers CLIP folder ({HF_CONFIG}) nor an open_clip one "
        f"({OPEN_CLIP_CONFIG})"
    )


def is_complete(path: Path) -> bool:
    """True for a checkpoint file, an export, or a folder with a config and one of its weight files."""
    if not path.exists():
        return False
    if path.is_file() or is_onnx_export(path):
        return True
    if (path / OPEN_CLIP_CONFIG).is_file():
        return any((path / w).is_file() for w in OPEN_CLIP_WEIGHT_FILES)
    if (path / HF_CONFIG).is_file():
        return any((path / w).is_file() for w in HF_WEIGHT_FILES) or any(path.glob("model-*.safetensors"))
    return False


def is_open_clip_name(name: str) -> bool:
    """Whether open_clip has an architecture `name`: its config files, so no torch import is needed; an
    already imported open_clip also knows the configs registered at run time (`add_model_config`)."""
    if "open_clip" in sys.modules:
        return name in sys.modules["open_clip"].list_models()
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return False  # without open_clip a Name/tag source cannot be served anyway: a hub repo id then
    configs = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    return (configs / f"{name}.json").is_file()


def hub_cached(repo: str, weights: Sequence[str], need: str | None = None) -> bool:
    """True when the Hugging Face cache holds `need` (if given) and one of `weights` for `repo`."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False

    def cached(filename: str) -> bool:
        try:
            return isinstance(try_to_load_from_cache(repo, filename), str)
        except ValueError:  # not a valid repo id
            return False

    return (need is None or cached(need)) and any(cached(w) for w in weights)


def open_clip_tag_cached(name: str, tag: str) -> bool:
    """True when open_clip would find `name`'s pretrained `tag` in its caches without the network."""
    if importlib.util.find_spec("open_clip") is None:
        return False
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        return False
    hub = str(cfg.get("hf_hub") or "")
    if hub.endswith("/"):  # open_clip's convention: a repo id, default weight file names
        return hub_cached(hub.rstrip("/"), OPEN_CLIP_WEIGHT_FILES)
    if hub:
        repo, filename = hub.rsplit("/", 1)
        return hub_cached(repo, [filename])
    url = cfg.get("url") or ""
    return bool(url) and (Path("~/.cache/clip").expanduser() / Path(url).name).is_file()


def _exports(label: str, models_dir: Path | None) -> dict[Precision, Path]:
    if models_dir is None:
        return {}
    root = default_export_root(models_dir)
    found: dict[Precision, Path] = {}
    for precision in PRECISIONS:
        try:
            folder = export_dir(root, label, precision)
        except ConfigError:
            return {}
        if is_onnx_export(folder):
            found[precision] = folder
    return found


def _looks_like_checkpoint(tag: str) -> bool:
    return tag.startswith(("/", ".", "~")) or tag.endswith(CHECKPOINT_SUFFIXES)
