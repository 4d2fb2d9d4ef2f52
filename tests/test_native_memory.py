"""The malloc arena cap: a worker process's threads share two glibc arenas instead of one each.

Counted with glibc's own `malloc_info` in a fresh interpreter whose threads each allocate, with and without
the cap, and with MALLOC_ARENA_MAX set by the operator (which wins).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc arenas"
)

PROBE = """
import ctypes, sys, tempfile, threading
from shared.native_memory import cap_malloc_arenas
applied = cap_malloc_arenas() if sys.argv[1] == "cap" else False
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.fclose.argtypes = [ctypes.c_void_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.malloc.restype = ctypes.c_void_p
barrier = threading.Barrier(8)
def work():
    barrier.wait()
    for _ in range(200):
        libc.malloc(4096)  # kept: a freed block could let a later thread reuse an arena
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
with tempfile.NamedTemporaryFile(suffix=".xml") as out:
    f = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, f)
    libc.fclose(f)
    heaps = open(out.name).read().count("<heap nr=")
print(applied, heaps)
"""


def arenas(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env={**clean, **(env or {})}, capture_output=True, text=True,
        check=True, timeout=60,
    )  # fmt: skip
    applied, heaps = out.stdout.split()
    return applied, int(heaps)


def test_the_cap_keeps_threads_to_two_arenas() -> None:
    assert arenas("cap") == ("True", 2)
    applied, heaps = arenas("default")
    assert applied == "False" and heaps > 2  # glibc alone gives the 8 threads arenas of their own


def test_malloc_arena_max_from_the_environment_wins() -> None:
    assert arenas("cap", {"MALLOC_ARENA_MAX": "4"}) == ("False", 4)
