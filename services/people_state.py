"""What `mindsight albums` remembers between runs, on disk under MINDSIGHT_PEOPLE_STATE_DIR.

Two files, written atomically (temp file, then rename):
- `people-<generation>.npz`: per person the sum of its unit face embeddings and its face count (its
  average distance to a new face is 1 - e . sum / count, as in the clustering); the faces that joined no
  person yet (embedding + photo id), so they can still form a person with faces uploaded later;
- `people.json`: the generation of the arrays, the face model they came from, the photos already scanned,
  and per person its stable id, album id and name, the photos in its album and the photos still to add.
The JSON names the arrays file, and old arrays files are removed only after the JSON is replaced, so a
crash at any point leaves a consistent pair. Lost or unreadable state is not an error: the next run
starts afresh, and albums it already made are recognised by the fingerprint in their description.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

STATE_FILE = "people.json"
FORMAT = 1
"""Bumped when the layout changes; state of another format is ignored (the run starts afresh)."""


@dataclass
class KnownPerson:
    """One person found in an earlier run (row `row` of the arrays)."""

    person_id: int
    album_id: int | None = None
    name: str = ""
    photo_ids: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)


@dataclass
class PeopleState:
    """People with their embedding sums, the faces not yet in a person, and the photos already scanned."""

    model: str
    people: list[KnownPerson] = field(default_factory=list)
    sums: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pool: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    pool_photos: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    scanned: set[int] = field(default_factory=set)
    generation: int = 0

    @property
    def next_person_id(self) -> int:
        return max((p.person_id for p in self.people), default=0) + 1


def load_state(folder: Path, model: str) -> PeopleState:
    """The state kept in `folder` for `model`, or an empty one (missing, unreadable, other model)."""
    path = folder / STATE_FILE
    if not path.exists():
        return PeopleState(model)
    try:
        meta = json.loads(path.read_text())
        if meta.get("format") != FORMAT or meta.get("model") != model:
            log.warning("people state in %s is for %s; starting afresh", folder, meta.get("model"))
            return PeopleState(model)
        with np.load(folder / meta["arrays"]) as arrays:
            state = PeopleState(
                model,
                people=[KnownPerson(**p) for p in meta["people"]],
                sums=arrays["sums"],
                counts=arrays["counts"],
                pool=arrays["pool"],
                pool_photos=arrays["pool_photos"],
                scanned=set(meta["scanned"]),
                generation=int(meta["generation"]),
            )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("people state in %s unreadable (%s); starting afresh", folder, exc)
        return PeopleState(model)
    if len(state.people) != len(state.counts):
        log.warning("people state in %s inconsistent; starting afresh", folder)
        return PeopleState(model)
    return state


def save_state(folder: Path, state: PeopleState, *, arrays_changed: bool = True) -> None:
    """Write `state` atomically; with `arrays_changed` False only the JSON is rewritten."""
    folder.mkdir(parents=True, exist_ok=True)
    if arrays_changed:
        state.generation += 1
        with _atomic(folder, f"people-{state.generation}.npz") as tmp:
            np.savez(
                tmp,
                sums=state.sums,
                counts=state.counts,
                pool=state.pool,
                pool_photos=state.pool_photos,
            )
    meta: dict[str, Any] = {
        "format": FORMAT,
        "model": state.model,
        "generation": state.generation,
        "arrays": f"people-{state.generation}.npz",
        "scanned": sorted(state.scanned),
        "people": [vars(p) for p in state.people],
    }
    with _atomic(folder, STATE_FILE) as tmp:
        tmp.write(json.dumps(meta).encode())
    for old in folder.glob("people-*.npz"):
        if old.name != meta["arrays"]:
            old.unlink(missing_ok=True)


class _atomic:
    """A temp file in `folder` renamed onto `name` when the block ends without error."""

    def __init__(self, folder: Path, name: str) -> None:
        self.target = folder / name
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "wb")

    def __enter__(self) -> Any:
        return self.file

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if exc_type is None:
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)
