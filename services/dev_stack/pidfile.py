"""var/dev.pids: the children of a running `dev run`, so that the next one can say what is in its way.

Children run in sessions of their own (see children.py), so they outlive a `dev run` killed with SIGKILL;
each is the leader of its process group, so `kill -- -PID` stops it and anything it started.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from shared.errors import ConfigError

EXEC_GRACE_S = 2.0
"""How long an empty /proc/PID/cmdline is re-read. A process in the middle of exec() shows an empty
cmdline for a few milliseconds after its parent's Popen() returned (the new image's argument area is not
set up yet); a live process that stays empty this long is a kernel thread, not ours."""


class AlreadyRunning(ConfigError):
    """Processes of an earlier `dev run` from the same var/ folder are still alive."""


class PidFile:
    """One `name pid` line per started child; removed after a clean stop."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, name: str, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(f"{name} {pid}\n")

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def alive(self) -> list[tuple[str, int]]:
        """Recorded children that still run a mindsight or redis command (a reused pid is not counted)."""
        if not self.path.is_file():
            return []
        found = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            name, _, pid_text = line.partition(" ")
            with contextlib.suppress(ValueError, OSError):
                pid = int(pid_text)
                os.kill(pid, 0)
                if _runs_ours(pid):
                    found.append((name, pid))
        return found

    def refuse_if_running(self) -> None:
        """AlreadyRunning, with the command that stops them, when an earlier run left children behind."""
        alive = self.alive()
        if not alive:
            self.clear()
            return
        names = ", ".join(f"{name} (pid {pid})" for name, pid in alive)
        groups = " ".join(f"-{pid}" for _, pid in alive)
        raise AlreadyRunning(
            f"processes of an earlier `mindsight dev run` are still running: {names}. Stop it with Ctrl-C in "
            f"its terminal, or with: kill -- {groups}"
        )


def _runs_ours(pid: int) -> bool:
    """Whether live `pid` runs a mindsight or redis command; a process still in exec() is waited for."""
    proc = Path(f"/proc/{pid}")
    if not proc.joinpath("cmdline").exists():
        return True  # no /proc (macOS): a live recorded pid is the best evidence there is
    deadline = time.monotonic() + EXEC_GRACE_S
    while True:
        text = proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ")
        if text:
            return b"mindsight" in text or b"redis" in text
        if _is_zombie(proc) or time.monotonic() >= deadline:
            return False  # exited (not yet reaped), or a kernel thread: nothing is running there
        time.sleep(0.005)


def _is_zombie(proc: Path) -> bool:
    # /proc/PID/stat is "pid (comm) state ..."; comm may hold spaces or parentheses, so split at the last ')'.
    return proc.joinpath("stat").read_text().rpartition(")")[2].split()[0] == "Z"
