"""People albums end to end: real face photos, the real offline backend, the reference gallery, the CLI."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from PIL import Image, ImageOps

from mindsight.cli.main import cli
from services.people_albums import (
    MARKER,
    AlbumsReport,
    PersonGroup,
    already_made,
    collect_faces,
    next_person_number,
    photo_source,
)
from shared.face_clustering import cluster_faces, eligible_faces
from shared.gallery_client import GalleryClient
from shared.models.face.registry import distance_threshold, load_face_analyzer
from shared.settings import Settings
from tests.fixtures.gallery import GalleryServer

pytest.importorskip("dlib")
pytest.importorskip("retinaface")


def _side_by_side(left: Image.Image, right: Image.Image, path: Path) -> Path:
    canvas = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), (128, 128, 128))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    canvas.save(path, "JPEG", quality=92)
    return path


@pytest.fixture
def face_gallery(
    gallery_server: GalleryServer,
    face_photos: dict[str, Path],
    write_variants: Callable[[Path, str], dict[str, Path]],
    tmp_path: Path,
) -> dict[str, Any]:
    """The gallery holding 4 copies of each of 3 people, two collages, and the cat; ids by role."""
    ids: dict[str, Any] = {}
    for name in ("astronaut", "camera", "grace_hopper"):
        ids[name] = [gallery_server.add_photo(p)[0] for p in write_variants(face_photos[name], name).values()]
    astronaut = Image.open(face_photos["astronaut"]).convert("RGB")
    grace = Image.open(face_photos["grace_hopper"]).convert("RGB")
    two_people = _side_by_side(astronaut, grace, tmp_path / "two_people.jpg")
    twins = _side_by_side(astronaut, ImageOps.mirror(astronaut), tmp_path / "twins.jpg")
    ids["two_people"] = gallery_server.add_photo(two_people)[0]
    ids["twins"] = gallery_server.add_photo(twins)[0]
    ids["cat"] = gallery_server.add_photo(face_photos["chelsea"])[0]
    return ids


@pytest.fixture
def album_settings(
    make_settings: Callable[..., Settings], gallery_server: GalleryServer, tmp_path: Path
) -> Settings:
    """Settings (and environment) pointing at the test gallery, with the offline dlib backend."""
    return make_settings(
        **gallery_server.env(),
        FACE_BACKEND="retinaface-dlib",
        PROCESSING_FACE_EMBEDDING_DIM="128",
        MINDSIGHT_PEOPLE_STATE_DIR=str(tmp_path / "people-state"),
    )


@pytest.fixture
def run_albums(album_settings: Settings, tmp_path: Path) -> Callable[..., Result]:
    """Factory: `run_albums("--dry-run")` runs `mindsight albums` against the test gallery."""

    def run(*args: str) -> Result:
        result = CliRunner().invoke(cli, ["--env-file", "/dev/null", "albums", *args])
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result

    return run


@pytest.fixture
def albums_now(album_settings: Settings) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Reads back user 1's albums through the user API."""
    client = GalleryClient(album_settings.gallery, internal=False)
    yield client.list_albums
    client.close()


@pytest.mark.slow
def test_one_album_per_person_then_nothing_new(
    run_albums: Callable[..., Result],
    face_gallery: dict[str, Any],
    albums_now: Callable[[], list[dict[str, Any]]],
) -> None:
    dry = run_albums("--dry-run")
    assert albums_now() == []
    assert "3 new people; would create 3 albums" in dry.output
    assert re.search(r"faces: 15/15 photos, [\d.]+ photos/s, eta 0s; 16 faces", dry.output), dry.output

    first = run_albums()
    albums = albums_now()
    by_photos = {frozenset(a["photo_ids"]): a for a in albums}
    a = face_gallery
    expected = {
        frozenset(a["astronaut"] + [a["two_people"], a["twins"]]),
        frozenset(a["grace_hopper"] + [a["two_people"]]),
        frozenset(a["camera"]),
    }
    assert set(by_photos) == expected, first.output
    assert sorted(x["name"] for x in albums) == ["Person 1", "Person 2", "Person 3"]
    for album in albums:
        # one face per photo: the twin collage adds one astronaut face, not two
        faces, photos = map(int, re.findall(r"(\d+) faces in (\d+) photos", album["description"])[0])
        assert faces == photos == len(album["photo_ids"])
        assert MARKER in album["description"]
    assert a["cat"] not in {pid for x in albums for pid in x["photo_ids"]}

    again = run_albums()
    assert len(albums_now()) == 3
    assert "15 photos (0 new, 0 unreadable), 0 faces" in again.output
    assert "3 people known, 0 gain faces, 0 new people; created 0 albums" in again.output


@pytest.mark.slow
def test_new_photos_grow_albums_and_start_new_ones(
    run_albums: Callable[..., Result],
    gallery_server: GalleryServer,
    face_photos: dict[str, Path],
    write_variants: Callable[[Path, str], dict[str, Path]],
    albums_now: Callable[[], list[dict[str, Any]]],
    album_settings: Settings,
) -> None:
    """First astronaut and Grace Hopper; then more of both and the camera man: two albums grow (through
    POST /api/albums/{id}/photos), one is created; a third run and a run after losing the state change
    nothing."""
    variants = {
        n: list(write_variants(face_photos[n], n).values()) for n in ("astronaut", "grace_hopper", "camera")
    }
    first = {
        n: [gallery_server.add_photo(p)[0] for p in variants[n][:2]] for n in ("astronaut", "grace_hopper")
    }
    run_albums()
    assert sorted(sorted(a["photo_ids"]) for a in albums_now()) == sorted(sorted(v) for v in first.values())
    later = {
        n: [gallery_server.add_photo(p)[0] for p in variants[n][2:]] for n in ("astronaut", "grace_hopper")
    }
    camera = [gallery_server.add_photo(p)[0] for p in variants["camera"]]
    dry = run_albums("--dry-run").output
    assert "2 people known, 2 gain faces, 1 new people; would create 1 albums" in dry
    assert len(albums_now()) == 2
    out = run_albums().output
    assert "created 1 albums, 0 already present, 4 photos added, 0 pending" in out
    albums = {a["name"]: a["photo_ids"] for a in albums_now()}
    assert sorted(map(sorted, albums.values())) == sorted(
        [
            sorted(first["astronaut"] + later["astronaut"]),
            sorted(first["grace_hopper"] + later["grace_hopper"]),
            sorted(camera),
        ]
    )
    assert "0 new, 0 unreadable" in run_albums().output and len(albums_now()) == 3
    # state lost: everything is clustered again, and every person adopts its album (same photo ids)
    shutil.rmtree(album_settings.face.people_state_dir)
    assert "created 0 albums, 3 already present" in run_albums().output
    assert len(albums_now()) == 3


def test_real_faces_group_the_same_on_the_graph_path(
    album_settings: Settings, face_gallery: dict[str, Any]
) -> None:
    """The dlib descriptors of the sample photos and their copies: the neighbour-graph path (every group
    of two or more faces through graph linkage) finds the same people as the dense reference."""
    client = GalleryClient(album_settings.gallery, internal=False)
    photos = client.list_photos()
    client.close()
    face = album_settings.face
    analyzer = load_face_analyzer(face, ["CPUExecutionProvider"])
    records = collect_faces(photos, analyzer, album_settings.paths, AlbumsReport(), lambda _: None)
    usable = eligible_faces(records, face.min_score, face.min_face_px)
    threshold = distance_threshold(face)
    reference = [p.photo_ids for p in cluster_faces(usable, threshold, 2)]
    assert [p.photo_ids for p in cluster_faces(usable, threshold, 2, exact_max=1)] == reference
    a = face_gallery
    assert sorted(map(sorted, reference)) == sorted(
        [
            sorted(a["astronaut"] + [a["two_people"], a["twins"]]),
            sorted(a["grace_hopper"] + [a["two_people"]]),
            sorted(a["camera"]),
        ]
    )


def test_options_override_settings(
    run_albums: Callable[..., Result],
    face_gallery: dict[str, Any],
    albums_now: Callable[[], list[dict[str, Any]]],
) -> None:
    """--max-photos, --threshold and --min-faces override MAX_PHOTOS and the face settings."""
    out = run_albums("--dry-run", "--max-photos", "3").output
    # the newest three: the cat and the two collages, whose astronauts make one person
    assert "3 new of 3 photos to scan" in out and "1 new people" in out
    pair = sorted([face_gallery["two_people"], face_gallery["twins"]])
    assert f"new person 1: 2 faces, photos {pair}" in out
    # 0.5 is far above every distance between these people: one "person" with a face from each of the
    # 14 photos, plus the 2 evicted collage faces as a second one, which --min-faces 6 drops
    out = run_albums("--dry-run", "--min-faces", "6", "--threshold", "0.5").output
    assert "(threshold 0.5, at least 6 faces" in out
    assert "new person 1: 14 faces" in out and "1 new people; would create 1 albums" in out
    assert albums_now() == []


def test_unreadable_photos_are_skipped(
    run_albums: Callable[..., Result], gallery_server: GalleryServer, face_photos: dict[str, Path]
) -> None:
    photo_id, rel = gallery_server.add_photo(face_photos["astronaut"])
    (gallery_server.root / rel).unlink()
    out = run_albums("--dry-run").output
    assert "1 photos (1 new, 1 unreadable), 0 faces" in out


def test_rerun_rule_fingerprint_or_same_photos() -> None:
    group = PersonGroup("Person 1", [3, 1, 2], 3)
    assert already_made(group, [{"name": "Holiday", "description": "", "photo_ids": [2, 3, 1]}])
    assert already_made(group, [{"name": "x", "description": f"kept {group.fingerprint}"}])
    assert not already_made(group, [{"name": "x", "description": "", "photo_ids": [1, 2]}])
    assert group.fingerprint == PersonGroup("Other name", [1, 2, 3], 9).fingerprint
    albums = [
        {"name": "Person 4", "description": f"{MARKER}abc"},
        {"name": "Person 9", "description": "made by hand"},
    ]
    assert next_person_number(albums) == 5


def test_configuration_errors_exit_2(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """No access token, or a dimension the backend cannot produce: one line on stderr, exit status 2."""
    env_file = "/dev/null"
    make_settings(ACCESS_TOKEN=None, FACE_BACKEND="retinaface-dlib", PROCESSING_FACE_EMBEDDING_DIM="128")
    result = CliRunner().invoke(cli, ["--env-file", env_file, "albums", "--dry-run"])
    assert result.exit_code == 2 and "ACCESS_TOKEN is not set" in result.output
    make_settings(ACCESS_TOKEN="t", FACE_BACKEND="retinaface-dlib", PROCESSING_FACE_EMBEDDING_DIM="512")
    result = CliRunner().invoke(cli, ["--env-file", env_file, "albums"])
    assert result.exit_code == 2 and "PROCESSING_FACE_EMBEDDING_DIM=128" in result.output


def test_photo_source_prefers_path_then_the_path_of_url() -> None:
    assert photo_source({"path": "./uploads/original/a.jpg", "url": "/uploads/original/b.jpg"}) == (
        "./uploads/original/a.jpg"
    )
    assert photo_source({"url": "http://gallery:5800/uploads/original/b.jpg"}) == "/uploads/original/b.jpg"
    assert photo_source({"url": "/uploads/original/c.jpg"}) == "/uploads/original/c.jpg"
    assert photo_source({}) == ""
