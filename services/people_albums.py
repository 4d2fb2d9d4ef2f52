"""People albums: find faces in the user's photos, group them into people, create one album per person.

Photos are listed through the gallery's user API and read from local disk (PROJECT_ROOT /
UPLOAD_BASE_DIR), as the legacy `people_album.py` did. Re-running is safe: each album's description
carries a fingerprint of its photo-id set (`mindsight-people:<sha1[:12]>`), and a person whose photo set
matches an existing album (same fingerprint in its description, or the same photo ids) is not created
again. A person who gains photos gets a new album; the old one is left alone for the user to delete.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from shared.errors import ImageDecodeError, UnsafePath
from shared.face_clustering import FaceRecord, Person, cluster_faces, eligible_faces
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

Progress = Callable[[str], None]


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
    photos_skipped: int = 0
    faces: int = 0
    faces_used: int = 0
    groups: list[PersonGroup] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    already_present: list[PersonGroup] = field(default_factory=list)
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
    start = time.perf_counter()
    for n, photo in enumerate(photos, 1):
        try:
            image = load_image(resolve_photo_path(photo_source(photo), roots))
            faces = analyzer.predict([image])[0]
            records.extend(FaceRecord(int(photo["id"]), f.bbox, f.score, f.embedding) for f in faces)
        except (UnsafePath, ImageDecodeError) as exc:
            report.photos_skipped += 1
            log.warning("photo %s skipped: %s", photo.get("id"), exc)
        if n % PROGRESS_EVERY == 0 or n == len(photos):
            rate = n / max(time.perf_counter() - start, 1e-9)
            progress(f"faces: {n}/{len(photos)} photos, {len(records)} faces, {rate:.1f} photos/s")
    report.photos = len(photos)
    report.faces = len(records)
    return records


def plan_groups(
    records: Sequence[FaceRecord], face: FaceSettings, threshold: float, min_faces: int
) -> tuple[list[PersonGroup], int]:
    """(one PersonGroup per person with at least `min_faces` faces, number of faces clustered)."""
    usable = eligible_faces(records, face.min_score, face.min_face_px)
    people: list[Person] = cluster_faces(usable, threshold, min_faces)
    groups = [
        PersonGroup(name=f"Person {i}", photo_ids=p.photo_ids, face_count=len(p.faces))
        for i, p in enumerate(people, 1)
    ]
    return groups, len(usable)


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


def create_albums(
    client: GalleryClient, groups: Sequence[PersonGroup], report: AlbumsReport, progress: Progress
) -> None:
    """Create the albums not already present; names continue after the existing 'Person N' albums."""
    albums = client.list_albums()
    number = next_person_number(albums)
    for group in groups:
        if already_made(group, albums):
            report.already_present.append(group)
            continue
        named = PersonGroup(f"Person {number}", group.photo_ids, group.face_count)
        number += 1
        album = client.create_album(named.name, named.description, named.photo_ids)
        report.created.append(album)
        progress(f"created album {named.name!r}: {len(named.photo_ids)} photos, {named.face_count} faces")


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
    """List photos, find and group faces, then create one album per person (or only print in dry runs)."""
    started = time.perf_counter()
    report = AlbumsReport()
    photos = client.list_photos(limit=max_photos)
    progress(f"{len(photos)} photos to scan (threshold {threshold:g}, at least {min_faces} faces per person)")
    records = collect_faces(photos, analyzer, paths, report, progress)
    report.groups, report.faces_used = plan_groups(records, face, threshold, min_faces)
    if dry_run:
        for g in report.groups:
            progress(f"{g.name}: {g.face_count} faces, photos {g.photo_ids}")
    else:
        create_albums(client, report.groups, report, progress)
    report.seconds = time.perf_counter() - started
    return report
