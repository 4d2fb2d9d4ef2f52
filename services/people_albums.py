"""People albums: find faces in the user's photos, group them into people, keep one album per person.

Photos are listed through the gallery's user API and read from local disk (PROJECT_ROOT /
UPLOAD_BASE_DIR), as the legacy `people_album.py` did. Only photos not scanned before are read: the
people found so far live in MINDSIGHT_PEOPLE_STATE_DIR (services/people_state.py), new faces join them
(services/people_incremental.py), and the rest are clustered into new people.

Re-running is safe: state is saved before any album is made, and each album's description carries a
fingerprint of the photo-id set it was created with (`mindsight-people:<sha1[:12]>`), so a person whose
album already exists (same fingerprint, or the same photo ids: e.g. state lost after a crash) adopts it
instead of getting a second one. A person who gains photos gets them added to its album through the
optional POST /api/albums/{id}/photos; where the gallery lacks it, the photos stay pending in the state
(reported on every run) and are added once the gallery has the endpoint.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from services.people_incremental import PeopleUpdate, update_people
from services.people_state import PeopleState, load_state, save_state
from shared.errors import GalleryRejected, ImageDecodeError, UnsafePath
from shared.face_clustering import FaceRecord, eligible_faces
from shared.face_progress import Eta, Progress
from shared.gallery_client import GalleryClient
from shared.images import load_image
from shared.models.base import FaceAnalyzer
from shared.paths import resolve_photo_path
from shared.settings import FaceSettings, PathSettings

log = logging.getLogger(__name__)

MARKER = "mindsight-people:"
"""Prefix of the fingerprint in an album's description; how reruns recognise albums they made."""

PROGRESS_EVERY = 25
"""Photos between two progress lines."""


@dataclass(frozen=True)
class PersonGroup:
    """One person as an album to create: its photos and how many faces were grouped."""

    name: str
    photo_ids: list[int]
    face_count: int

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha1(",".join(map(str, sorted(self.photo_ids))).encode()).hexdigest()[:12]
        return f"{MARKER}{digest}"

    @property
    def description(self) -> str:
        return f"{self.face_count} faces in {len(self.photo_ids)} photos. {self.fingerprint}"


@dataclass
class AlbumsReport:
    """What a run saw and did."""

    photos: int = 0
    photos_new: int = 0
    photos_skipped: int = 0
    skipped_ids: set[int] = field(default_factory=set)
    faces: int = 0
    faces_used: int = 0
    people_known: int = 0
    groups: list[PersonGroup] = field(default_factory=list)
    grown: dict[str, int] = field(default_factory=dict)
    created: list[dict[str, Any]] = field(default_factory=list)
    already_present: list[PersonGroup] = field(default_factory=list)
    photos_added: int = 0
    photos_pending: int = 0
    seconds: float = 0.0


def photo_source(photo: dict[str, Any]) -> str:
    """The photo's file as the gallery names it: `path` when given, else the path part of `url`."""
    if photo.get("path"):
        return str(photo["path"])
    url = str(photo.get("url") or "")
    return urlsplit(url).path if "://" in url else url


def collect_faces(
    photos: Sequence[dict[str, Any]],
    analyzer: FaceAnalyzer,
    paths: PathSettings,
    report: AlbumsReport,
    progress: Progress,
) -> list[FaceRecord]:
    """Detect and embed the faces of each photo read from local disk; unreadable photos are skipped."""
    records: list[FaceRecord] = []
    roots = paths.roots()
    eta = Eta(len(photos), "photos")
    for n, photo in enumerate(photos, 1):
        try:
            image = load_image(resolve_photo_path(photo_source(photo), roots))
            faces = analyzer.predict([image])[0]
            records.extend(FaceRecord(int(photo["id"]), f.bbox, f.score, f.embedding) for f in faces)
        except (UnsafePath, ImageDecodeError) as exc:
            report.photos_skipped += 1
            report.skipped_ids.add(int(photo["id"]))
            log.warning("photo %s skipped: %s", photo.get("id"), exc)
        if n % PROGRESS_EVERY == 0 or n == len(photos):
            progress(f"faces: {eta.line(n)}; {len(records)} faces")
    report.faces = len(records)
    return records


def already_made(group: PersonGroup, albums: Sequence[dict[str, Any]]) -> bool:
    """True when an album has this group's fingerprint, or exactly its photo ids."""
    wanted = set(group.photo_ids)
    for album in albums:
        if group.fingerprint in str(album.get("description") or ""):
            return True
        ids = album.get("photo_ids")
        if ids is not None and {int(i) for i in ids} == wanted:
            return True
    return False


def next_person_number(albums: Sequence[dict[str, Any]]) -> int:
    """1 + the highest N among existing 'Person N' albums this tool made, so names never repeat."""
    numbers = [
        int(m.group(1))
        for a in albums
        if MARKER in str(a.get("description") or "")
        and (m := re.fullmatch(r"Person (\d+)", str(a.get("name") or "")))
    ]
    return max(numbers, default=0) + 1


def find_album(group: PersonGroup, albums: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The album made for this group before (same fingerprint or exactly its photo ids), if any."""
    for album in albums:
        if already_made(group, [album]):
            return album
    return None


def person_group(state: PeopleState, row: int) -> PersonGroup:
    """The album-to-be of person `row`: its name (or a placeholder) and the photos it will hold."""
    person = state.people[row]
    photos = sorted(set(person.photo_ids) | set(person.pending))
    return PersonGroup(person.name or f"person #{person.person_id}", photos, int(state.counts[row]))


def create_albums(
    client: GalleryClient, state: PeopleState, folder: Path, report: AlbumsReport, progress: Progress
) -> None:
    """Give every person without an album one (adopting an album made before), saving state after each."""
    albums = client.list_albums()
    number = next_person_number(albums)
    for row, person in enumerate(state.people):
        if person.album_id is not None:
            continue
        group = PersonGroup(f"Person {number}", sorted(person.pending), int(state.counts[row]))
        album = find_album(group, albums)
        if album is not None:
            report.already_present.append(group)
        else:
            number += 1
            album = client.create_album(group.name, group.description, group.photo_ids)
            report.created.append(album)
            progress(f"created album {group.name!r}: {len(group.photo_ids)} photos, {group.face_count} faces")
        person.album_id, person.name = int(album["id"]), str(album.get("name") or group.name)
        person.photo_ids, person.pending = sorted(set(person.photo_ids) | set(person.pending)), []
        save_state(folder, state, arrays_changed=False)


def grow_albums(
    client: GalleryClient, state: PeopleState, folder: Path, report: AlbumsReport, progress: Progress
) -> None:
    """Add each person's pending photos to its album; where the gallery refuses, they stay pending."""
    for person in state.people:
        if person.album_id is None or not person.pending:
            continue
        try:
            client.add_album_photos(person.album_id, sorted(person.pending))
        except GalleryRejected as exc:
            pending = sum(len(p.pending) for p in state.people)
            progress(
                f"cannot add photos to existing albums ({exc}); {pending} photos stay pending until the "
                "gallery has POST /api/albums/{id}/photos"
            )
            return
        report.photos_added += len(person.pending)
        progress(f"added {len(person.pending)} photos to {person.name!r}")
        person.photo_ids, person.pending = sorted(set(person.photo_ids) | set(person.pending)), []
        save_state(folder, state, arrays_changed=False)


def describe_update(
    state: PeopleState, update: PeopleUpdate, report: AlbumsReport, progress: Progress
) -> None:
    """Fill the report with what the update changes, and print it."""
    for row in update.created:
        report.groups.append(person_group(state, row))
    for row, faces in sorted(update.grown.items()):
        group = person_group(state, row)
        report.grown[group.name] = faces
        progress(f"{group.name}: +{faces} faces, photos {sorted(state.people[row].pending)}")
    for n, group in enumerate(report.groups, 1):
        progress(f"new person {n}: {group.face_count} faces, photos {group.photo_ids}")


def run_people_albums(
    client: GalleryClient,
    analyzer: FaceAnalyzer,
    face: FaceSettings,
    paths: PathSettings,
    *,
    threshold: float,
    min_faces: int,
    max_photos: int = 0,
    dry_run: bool = False,
    progress: Progress = print,
) -> AlbumsReport:
    """Scan new photos, add their faces to known people or new ones, then bring the albums up to date
    (in dry runs only print what would change; nothing is written)."""
    started = time.perf_counter()
    report = AlbumsReport()
    folder = face.people_state_dir
    state = load_state(folder, f"{face.backend}:{face.model_label}:{face.embedding_dim}")
    report.people_known = len(state.people)
    photos = client.list_photos(limit=max_photos)
    fresh = [p for p in photos if int(p["id"]) not in state.scanned]
    report.photos, report.photos_new = len(photos), len(fresh)
    progress(
        f"{len(fresh)} new of {len(photos)} photos to scan, {len(state.people)} people known "
        f"(threshold {threshold:g}, at least {min_faces} faces per person)"
    )
    records = collect_faces(fresh, analyzer, paths, report, progress)
    usable: list[FaceRecord] = eligible_faces(records, face.min_score, face.min_face_px)
    report.faces_used = len(usable)
    update = update_people(state, usable, threshold, min_faces, progress)
    state.scanned |= {int(p["id"]) for p in fresh} - report.skipped_ids
    describe_update(state, update, report, progress)
    if not dry_run:
        save_state(folder, state)
        create_albums(client, state, folder, report, progress)
        grow_albums(client, state, folder, report, progress)
    report.photos_pending = sum(len(p.pending) for p in state.people if p.album_id is not None)
    report.seconds = time.perf_counter() - started
    return report
