"""How many glibc malloc arenas a process may use: the one native-memory setting of our processes.

glibc gives threads their own malloc arenas, up to 8 per core, and memory freed into one arena is not
reused by another. A photo worker runs torch's and onnxruntime's thread pools plus the decode threads, so
activations and decodes scatter over many arenas and peak RSS grows with no speed gained: the whole-photo
bench (ViT-L/14 + BLIP + faces, `worker photo` 1 x 2 threads, 2 cores) measured the photo worker at
2,439-2,466 MiB with glibc's default and 2,366 (whole stack 2,717-2,793 instead of 2,829-2,867) with two
arenas, photos/s unchanged within the run-to-run spread. MALLOC_ARENA_MAX in the environment, which glibc
applies at start, wins over this.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

MALLOC_ARENAS = 2
M_ARENA_MAX = -8
"""glibc's mallopt parameter number for the arena limit (malloc.h)."""


def cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Limit this process to `arenas` malloc arenas unless MALLOC_ARENA_MAX is set; True when applied.

    Call it first thing in a process, before threads allocate: arenas made before stay. A no-op where the C
    library is not glibc (musl, macOS)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = mallopt(M_ARENA_MAX, arenas) == 1
    if not applied:
        log.debug("mallopt(M_ARENA_MAX, %d) refused; glibc's default arenas stay", arenas)
    return applied
