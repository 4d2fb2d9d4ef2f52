"""Photo paths resolve inside the upload roots and nowhere else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.errors import ImageDecodeError, PermanentError, UnsafePath
from shared.paths import resolve_photo_path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    photo = tmp_path / "gallery" / "uploads" / "original" / "x.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"jpeg")
    (tmp_path / "secret.txt").write_text("no")
    return tmp_path / "gallery"


def test_relative_path_resolves_against_root(root: Path) -> None:
    assert (
        resolve_photo_path("./uploads/original/x.jpg", [root]) == (root / "uploads/original/x.jpg").resolve()
    )


def test_backend_style_absolute_url_path_is_rerooted(root: Path) -> None:
    assert resolve_photo_path("/uploads/original/x.jpg", [root]).name == "x.jpg"


def test_absolute_path_inside_root_is_allowed(root: Path) -> None:
    target = root / "uploads/original/x.jpg"
    assert resolve_photo_path(str(target), [root]) == target.resolve()


def test_second_root_is_tried(root: Path, tmp_path: Path) -> None:
    other = tmp_path / "empty"
    other.mkdir()
    assert resolve_photo_path("uploads/original/x.jpg", [other, root]).name == "x.jpg"


@pytest.mark.parametrize(
    "path", ["../secret.txt", "uploads/../../secret.txt", "/etc/passwd", "/../secret.txt"]
)
def test_escapes_are_refused(root: Path, path: str) -> None:
    with pytest.raises(UnsafePath):
        resolve_photo_path(path, [root])


def test_symlink_pointing_outside_is_refused(root: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "secret.txt", root / "uploads/original/link.jpg")
    with pytest.raises(UnsafePath):
        resolve_photo_path("uploads/original/link.jpg", [root])


def test_missing_file_inside_root_is_a_decode_error_not_a_security_error(root: Path) -> None:
    with pytest.raises(ImageDecodeError, match="not found"):
        resolve_photo_path("uploads/original/gone.jpg", [root])


def test_nul_and_empty_are_refused(root: Path) -> None:
    for bad in ("", "x\x00.jpg"):
        with pytest.raises(UnsafePath):
            resolve_photo_path(bad, [root])


def test_a_symlink_loop_is_permanent(root: Path) -> None:
    loop = root / "uploads/original/loop.jpg"
    os.symlink(loop, loop)
    with pytest.raises(PermanentError):
        resolve_photo_path("uploads/original/loop.jpg", [root])


@pytest.mark.parametrize(
    "path",
    [
        "uploads/original/" + "a" * 300 + ".jpg",  # ENAMETOOLONG
        "/".join(["a" * 250] * 20),  # a path over PATH_MAX
        "~nosuchuser-0123/x.jpg",  # expanduser cannot find the user
        "uploads/original/\ud800.jpg",  # a lone surrogate cannot become a file name
        "~",
    ],
    ids=["long-name", "long-path", "unknown-user", "surrogate", "tilde"],
)
def test_impossible_paths_are_permanent(root: Path, path: str) -> None:
    with pytest.raises(PermanentError):
        resolve_photo_path(path, [root])


def test_a_fifo_and_a_directory_are_not_photos(root: Path) -> None:
    os.mkfifo(root / "uploads/original/pipe.jpg")
    (root / "uploads/original/dir.jpg").mkdir()
    for name in ("pipe.jpg", "dir.jpg"):
        with pytest.raises(ImageDecodeError):
            resolve_photo_path(f"uploads/original/{name}", [root])
