"""Where uploaded originals live on disk, and the relative path / URL the gallery hands out for them."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

from services.gallery.errors import BadUpload

UPLOAD_SUBDIR = Path("uploads") / "original"
"""Relative to the gallery root; workers resolve `./uploads/original/x.jpg` against PROJECT_ROOT = root."""

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".heic"})
"""File types the upload endpoint and `mindsight enqueue` accept."""

MAX_UPLOAD_BYTES = 64 * 1024 * 1024
"""A dev gallery has no business receiving bigger files; refuse them before writing to disk."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def unique_name(original: str) -> str:
    """A collision-free file name that keeps a readable, sanitised stem of the original name."""
    suffix = Path(original).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise BadUpload(f"{original!r}: unsupported file type; expected one of {sorted(IMAGE_SUFFIXES)}")
    stem = _UNSAFE.sub("_", Path(original).stem).strip("._")[:40] or "photo"
    return f"{uuid.uuid4().hex[:12]}_{stem}{suffix}"


def relative_path(name: str) -> str:
    """The path as stored in photo jobs: `./uploads/original/<name>`."""
    return f"./{UPLOAD_SUBDIR.as_posix()}/{name}"


def url_for(name: str) -> str:
    """The URL the user API serves the original at."""
    return f"/{UPLOAD_SUBDIR.as_posix()}/{name}"


class UploadDir:
    """The originals folder under one gallery root."""

    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / UPLOAD_SUBDIR
        self.dir.mkdir(parents=True, exist_ok=True)

    def save_bytes(self, original_name: str, data: bytes) -> str:
        """Write `data` under a unique name derived from `original_name`; return that name."""
        if not data:
            raise BadUpload(f"{original_name!r} is empty")
        if len(data) > MAX_UPLOAD_BYTES:
            raise BadUpload(f"{original_name!r} is {len(data)} bytes, over {MAX_UPLOAD_BYTES}")
        name = unique_name(original_name)
        tmp = self.dir / f".{name}.part"
        tmp.write_bytes(data)
        tmp.replace(self.dir / name)  # atomic: a worker never sees half a file
        return name

    def copy_in(self, src: Path) -> str:
        """Copy a local file in under a unique name (any suffix, so tests can store broken files too)."""
        suffix = src.suffix.lower()
        stem = _UNSAFE.sub("_", src.stem).strip("._")[:40] or "photo"
        name = f"{uuid.uuid4().hex[:12]}_{stem}{suffix}"
        shutil.copyfile(src, self.dir / name)
        return name

    def file(self, name: str) -> Path | None:
        """The stored file called `name`, or None when there is none (names never contain a separator)."""
        if "/" in name or "\\" in name or name.startswith("."):
            return None
        path = self.dir / name
        return path if path.is_file() else None
