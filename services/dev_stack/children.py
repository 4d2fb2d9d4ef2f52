"""Child processes of `dev run`: started in their own session, output kept per process and echoed prefixed.

Children run in a session of their own so that Ctrl-C in the terminal reaches only `dev run`, which then
stops them in order (workers before Redis), instead of every process dying at once.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import click

TAIL_LINES = 40
"""Lines of a child's output kept in memory, shown when it fails."""

_COLORS = itertools.cycle(["cyan", "green", "magenta", "blue", "yellow", "bright_cyan", "bright_green"])


class LogHub:
    """Every line a child prints goes to ./var/logs/<name>.log, and to the terminal prefixed when `echo`."""

    def __init__(self, log_dir: Path, echo: bool) -> None:
        self.log_dir = log_dir
        self.echo = echo
        self._lock = threading.RLock()
        self._width = 0
        self._colors: dict[str, str] = {}
        self.muted: re.Pattern[str] | None = None
        """Lines matching this are kept out of the terminal (not out of the files)."""
        log_dir.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def register(self, name: str) -> IO[str]:
        """Open (truncate) the child's log file and reserve its prefix colour."""
        self._width = max(self._width, len(name) + 2)
        self._colors.setdefault(name, next(_COLORS))
        return self.path(name).open("w", encoding="utf-8", errors="replace", buffering=1)

    def child_line(self, name: str, line: str, echo: bool = True) -> None:
        """Echo one line of a child's output with its `[name]` prefix (when echoing is on)."""
        if not (self.echo and echo) or (self.muted is not None and self.muted.search(line)):
            return
        prefix = click.style(f"[{name}]".ljust(self._width), fg=self._colors.get(name))
        with self._lock:
            click.echo(f"{prefix} {line}")

    def say(self, message: str = "", **style: object) -> None:
        """A message of `dev run` itself: always on the terminal."""
        with self._lock:
            click.secho(message, **style)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def block(self) -> Iterator[None]:
        """Hold children's lines back while a multi-line report is printed."""
        with self._lock:
            yield


class Child:
    """One `python -m mindsight ...` process (or any argv) whose output is pumped into the LogHub."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        logs: LogHub,
        echo: bool = True,
        keep_output: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.logs = logs
        self.echo = echo
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.keep_output = keep_output
        self.output: list[str] = []
        """Every line when `keep_output`: for short-lived children whose output is read (enqueue, search)."""
        self._pump: threading.Thread | None = None

    def start(self) -> Child:
        log_file = self.logs.register(self.name)
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._pump = threading.Thread(
            target=self._read, args=(log_file,), name=f"log-{self.name}", daemon=True
        )
        self._pump.start()
        return self

    def _read(self, log_file: IO[str]) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with log_file:
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                log_file.write(line + "\n")
                self.lines.append(line)
                if self.keep_output:
                    self.output.append(line)
                self.logs.child_line(self.name, line, self.echo)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig` to the child (not to its own children: each mindsight process stops its own)."""
        if self.running():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def wait(self, timeout: float) -> bool:
        """Wait until it exited (and its output is drained); False on timeout."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        if self._pump is not None:
            self._pump.join(timeout=2)
        return True

    def kill(self) -> None:
        """SIGKILL the child's whole session (a stuck process and anything it started)."""
        if self.running():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.wait(5)

    def tail(self, n: int = 20) -> list[str]:
        return list(self.lines)[-n:]


def stop_children(children: Sequence[Child], timeout: float) -> list[Child]:
    """SIGTERM them all, wait up to `timeout` in total, SIGKILL the rest; returns those killed."""
    for child in children:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed = []
    for child in children:
        if not child.wait(max(0.0, deadline - time.monotonic())):
            child.kill()
            killed.append(child)
    return killed
