"""Where a configured model source lives: a local folder (as given, or under MINDSIGHT_MODELS_DIR) or the hub.

Also the offline switch for loads: with MINDSIGHT_OFFLINE set, nothing may try the network, including
libraries (open_clip) that call huggingface_hub without a `local_files_only` argument of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.errors import ConfigError

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
