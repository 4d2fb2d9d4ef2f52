"""Resolve a job's path safely and decode the photo once per process, at the size the models need.

Several capabilities hosted in one process (`mindsight worker photo|all`) read the same photo: a small
LRU keyed by file identity hands them one decode, re-decoding only when a larger size is asked for. It is
bounded in bytes, not photos: a photo decoded for faces (1280 px short side) weighs ~9 MB, one decoded
for CLIP ~0.6 MB, and a process hosting one capability keeps no cache at all (it never reads a photo twice).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from shared.images import load_image
from shared.paths import resolve_photo_path

_ROTATING_ORIENTATIONS = {5, 6, 7, 8}

DECODE_CACHE_BYTES = 24 * 2**20
"""Decoded pixels a multi-capability process keeps: two photos at face size, or dozens at CLIP size. That
is what sharing a decode needs when a photo's capabilities run one after the other (an upload on an idle
worker: its face decode serves its caption). In a burst they run far apart, since the burst's image
embeddings all come first (CAPABILITY_PRIORITY), so a cache holding a burst's face decodes (80 MiB before)
saved a few 30 ms caption decodes and added its size to the worker's peak memory."""


@dataclass(frozen=True)
class DecodedPhoto:
    """A decoded RGB photo and the size of the full-resolution photo as the user sees it."""

    path: Path
    image: Image.Image
    original_size: tuple[int, int]

    @property
    def scale(self) -> float:
        """Factor from decoded pixels to full-resolution pixels (>= 1 when decoded smaller)."""
        return self.original_size[0] / self.image.size[0]


def displayed_size(path: Path) -> tuple[int, int]:
    """Full-resolution (width, height) after EXIF rotation, read from the header only."""
    with Image.open(path) as img:
        w, h = img.size
        orientation = img.getexif().get(0x0112, 1)
    return (h, w) if orientation in _ROTATING_ORIENTATIONS else (w, h)


class PhotoDecoder:
    """Path resolution inside the upload roots plus a small decode cache."""

    def __init__(
        self, roots: Sequence[Path], cache_bytes: int = DECODE_CACHE_BYTES, threads: int = 1
    ) -> None:
        self.roots = list(roots)
        self.threads = threads
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple[str, int, int], tuple[int | None, DecodedPhoto]] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()

    def load(self, path: str, min_side: int | None) -> DecodedPhoto:
        """Decode `path` keeping at least `min_side` on the shorter side (None: full size)."""
        real = resolve_photo_path(path, self.roots)
        stat = real.stat()
        key = (str(real), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and _covers(hit[0], min_side):
                self._cache.move_to_end(key)
                return hit[1]
        image = load_image(real, min_side=min_side)
        photo = DecodedPhoto(real, image, displayed_size(real))
        if self.cache_bytes:
            with self._lock:
                old = self._cache.pop(key, None)
                if old is not None:
                    self._cached_bytes -= _weight(old[1])
                self._cache[key] = (min_side, photo)
                self._cached_bytes += _weight(photo)
                while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
                    _, (_, dropped) = self._cache.popitem(last=False)
                    self._cached_bytes -= _weight(dropped)
        return photo

    def load_all(self, paths: Sequence[str], min_side: int | None) -> list[DecodedPhoto | Exception]:
        """`load` of each path, in order; a photo that fails gives its exception in its place.

        With MINDSIGHT_THREADS > 1 the photos of a batch are decoded side by side (PIL decodes without
        the GIL), so a process given several cores does not leave all but one idle while it decodes.
        """
        if self.threads <= 1 or len(paths) <= 1:
            return [self._load_or_error(p, min_side) for p in paths]
        with ThreadPoolExecutor(min(self.threads, len(paths)), thread_name_prefix="decode") as pool:
            return list(pool.map(lambda p: self._load_or_error(p, min_side), paths))

    def _load_or_error(self, path: str, min_side: int | None) -> DecodedPhoto | Exception:
        try:
            return self.load(path, min_side)
        except Exception as exc:  # the caller settles each photo's failure on its own
            return exc

    def cached_bytes(self) -> int:
        """Bytes of decoded pixels held by the cache now."""
        with self._lock:
            return self._cached_bytes


def _weight(photo: DecodedPhoto) -> int:
    w, h = photo.image.size
    return w * h * len(photo.image.getbands())


def _covers(cached: int | None, wanted: int | None) -> bool:
    if cached is None:
        return True
    return wanted is not None and cached >= wanted
