"""Runs the children of `dev run`: long-lived services, short CLI runs, and the stop request (Ctrl-C)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from services.dev_stack.children import Child, LogHub, stop_children
from services.dev_stack.pidfile import PidFile
from shared.errors import MindsightError

STOP_TIMEOUT_S = 20.0
"""How long services get to stop cleanly (an RQ worker finishes its current job) before SIGKILL."""


class StopRequested(MindsightError):
    """SIGINT or SIGTERM arrived: stop everything."""


class ChildFailed(MindsightError):
    """A child exited when it should not have, or with a failure status; carries the child."""

    def __init__(self, child: Child, what: str) -> None:
        super().__init__(f"{child.name} {what}")
        self.child = child


class Supervisor:
    """Starts `python -m mindsight ...` children with one environment and watches them."""

    def __init__(self, logs: LogHub, cwd: Path, env: Mapping[str, str], env_file: str, pids: PidFile) -> None:
        self.logs = logs
        self.pids = pids
        self.cwd = cwd
        self.env = dict(env)
        self.env_file = env_file
        self.services: list[Child] = []
        self.last: list[Child] = []
        """Services stopped after all others (the embedded Redis), in start order."""
        self._stop = threading.Event()
        self.signals = 0

    def argv(self, args: Sequence[str]) -> list[str]:
        # The children read the same file; an absent implicit ./.env is passed as no file at all, since
        # `--env-file` refuses a path that does not exist.
        env_file = ["--env-file", self.env_file] if (self.cwd / self.env_file).exists() else []
        return [sys.executable, "-m", "mindsight", *env_file, *args]

    def start(
        self, name: str, args: Sequence[str], last: bool = False, env: Mapping[str, str] | None = None
    ) -> Child:
        """Start a long-lived service (`env` on top of the common environment); its exit fails the run."""
        child = Child(name, self.argv(args), {**self.env, **(env or {})}, self.cwd, self.logs).start()
        self.pids.record(name, child.pid)
        (self.last if last else self.services).append(child)
        return child

    def run(self, name: str, args: Sequence[str], timeout: float, echo: bool = True, **env: str) -> Child:
        """Run a short-lived command to its end (status 0 required), still watching the services."""
        child_env = {**self.env, **env}
        child = Child(name, self.argv(args), child_env, self.cwd, self.logs, echo=echo, keep_output=True)
        child.start()
        deadline = time.monotonic() + timeout
        try:
            while not child.wait(0.1):
                self.check()
                if time.monotonic() > deadline:
                    raise ChildFailed(child, f"did not finish within {timeout:.0f}s")
        except BaseException:
            child.kill()
            raise
        if child.returncode != 0:
            raise ChildFailed(child, f"exited with status {child.returncode}")
        return child

    def check(self) -> None:
        """Raise StopRequested after a signal, ChildFailed when a service has exited."""
        if self._stop.is_set():
            raise StopRequested("stop requested")
        for child in self.last + self.services:
            if child.proc is not None and not child.running():
                raise ChildFailed(child, f"exited unexpectedly with status {child.returncode}")

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early (with an exception) on a stop request or a dead service."""
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, 0.2))

    def stop_all(self) -> list[Child]:
        """Stop services (all at once), then the `last` ones; returns those that had to be killed."""
        killed = stop_children(list(reversed(self.services)), STOP_TIMEOUT_S)
        killed += stop_children(list(reversed(self.last)), STOP_TIMEOUT_S)
        if not any(c.running() for c in self.services + self.last):
            self.pids.clear()
        return killed

    def request_stop(self) -> None:
        self._stop.set()

    @contextmanager
    def signals_stop(self) -> Iterator[None]:
        """While inside: SIGINT/SIGTERM request a clean stop; a second one kills the children at once."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            self.signals += 1
            if self.signals == 1:
                self.logs.say(
                    f"\n{signal.Signals(signum).name}: stopping (again to kill at once)", fg="yellow"
                )
                self._stop.set()
            else:
                for child in self.services + self.last:
                    child.kill()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
