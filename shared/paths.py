"""Resolve a job's photo path inside the upload roots, refusing anything that escapes them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shared.errors import BadPayload, ImageDecodeError, UnsafePath


def resolve_photo_path(path: str, roots: Sequence[Path]) -> Path:
    """Return the real path of `path` if it lies inside one of `roots`.

    Relative paths are tried against each root in order (`./uploads/x.jpg` and `/uploads/x.jpg` style
    paths from the backend both work); an absolute path must already lie inside a root. Symlinks and `..`
    are resolved first, so a link pointing outside the roots is refused. A path that stays inside but does
    not exist is an ImageDecodeError (the file is gone), not an UnsafePath.
    """
    if not path or "\x00" in path:
        raise UnsafePath(f"photo path {path!r} is empty or contains NUL")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadPayload(f"photo path {path!r} is not valid UTF-8 text (lone surrogate)") from exc
    real_roots = [r.expanduser().resolve() for r in roots]
    try:
        return _resolve(path, real_roots)
    except (OSError, RuntimeError, ValueError) as exc:
        # A symlink loop (RuntimeError), ENAMETOOLONG, `~nosuchuser`: the same on every retry.
        raise ImageDecodeError(
            f"photo path {path!r} cannot be resolved: {type(exc).__name__}: {exc}"
        ) from exc


def _resolve(path: str, real_roots: list[Path]) -> Path:
    raw = Path(path).expanduser()
    candidates: list[Path] = []
    if raw.is_absolute():
        candidates.append(raw)
        # The backend stores "/uploads/original/x.jpg" meaning "relative to its own root".
        candidates.extend(root / raw.relative_to(raw.anchor) for root in real_roots)
    else:
        candidates.extend(root / raw for root in real_roots)

    inside_missing: Path | None = None
    for i, cand in enumerate(candidates):
        resolved = cand.resolve()
        if not any(resolved.is_relative_to(root) for root in real_roots):
            continue
        if resolved.is_file():
            return resolved
        # A missing re-rooted form of an absolute path says nothing: the literal path was outside.
        if not raw.is_absolute() or i == 0:
            inside_missing = inside_missing or resolved
    if inside_missing is not None:
        raise ImageDecodeError(
            f"photo file not found: {path!r} (looked in {', '.join(map(str, real_roots))})"
        )
    raise UnsafePath(
        f"photo path {path!r} resolves outside the upload roots ({', '.join(map(str, real_roots))}); "
        "set PROJECT_ROOT or UPLOAD_BASE_DIR"
    )
