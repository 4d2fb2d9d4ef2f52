"""Install a folder atomically: build it hidden beside its destination, move it into place when complete.

Every made-at-download artefact (the ONNX exports, BLIP's int8 file) goes through here, so a folder found
at its final path always holds a finished, checked result and a failed build leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """A hidden folder beside `final`, moved onto it when the block succeeds and removed when it fails."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; an installed folder is read by other users too
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
