"""Start, watch and stop the processes under test (`mindsight ...`, baseline workers), each with its log.

Also what is read from them: peak RSS (VmHWM in /proc/<pid>/status, as psutil is not a dependency) and
their Prometheus stage histograms.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.embedded_redis import free_port

CLEARED_ENV_PREFIXES = (
    "MINDSIGHT_", "CLIP_", "REDIS_", "CAPTION_", "FACE_", "PROCESSING_", "EMBED_API_", "TEXT_EMBED_",
    "API_BASE_URL", "PROJECT_ROOT", "UPLOAD_BASE_DIR", "ACCESS_TOKEN", "OMP_", "MKL_",
)  # fmt: skip
"""Inherited settings that would change what is measured; every process gets exactly the bench's values."""


class ProcessFailed(RuntimeError):
    """A process under test exited early; the message carries the end of its log."""


@dataclass
class Proc:
    """One started process and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    metrics_port: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class ProcessGroup:
    """The processes of one measurement; `stop()` ends them all (SIGTERM, then SIGKILL)."""

    workdir: Path
    base_env: Mapping[str, str]
    procs: list[Proc] = field(default_factory=list)

    def env(self, overrides: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED_ENV_PREFIXES)}
        env.update(self.base_env)
        env.update(overrides)
        return env

    def start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Proc:
        """Run `python argv...` in the background with the bench environment plus `env`."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / f"{name}.log"
        overrides = dict(env or {})
        port = int(overrides.get("MINDSIGHT_METRICS_PORT", "0"))
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, *argv], env=self.env(overrides), cwd=self.workdir, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        proc = Proc(name, popen, log, port)
        self.procs.append(proc)
        return proc

    def mindsight(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> Proc:
        """`mindsight ARGS` exactly as deployed (no .env file: the environment is the configuration)."""
        return self.start(name, ["-m", "mindsight", "--env-file", "/dev/null", *args], env)

    def check_alive(self) -> None:
        """Raise ProcessFailed if any process has exited."""
        for proc in self.procs:
            code = proc.popen.poll()
            if code is not None:
                raise ProcessFailed(f"{proc.name} exited with {code}:\n{proc.tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        self.procs.clear()


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a live process, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def wait_http_ok(url: str, group: ProcessGroup, timeout: float) -> None:
    """Poll `url` until it answers 200, failing early if a process of `group` dies."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        group.check_alive()
        try:
            resp = httpx.get(url, timeout=2)
            if resp.status_code == 200:
                return
            last = f"{resp.status_code} {resp.text[:200]}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready within {timeout:.0f}s (last: {last})")


def stage_seconds(port: int) -> dict[str, tuple[float, float]]:
    """`mindsight_stage_seconds` of a worker's /metrics: stage -> (sum of seconds, number of batches)."""
    out: dict[str, tuple[float, float]] = {}
    for (_, stage), (seconds, count) in capability_stage_seconds(port).items():
        before = out.get(stage, (0.0, 0.0))
        out[stage] = (before[0] + seconds, before[1] + count)
    return out


def capability_stage_seconds(port: int) -> dict[tuple[str, str], tuple[float, float]]:
    """The same by capability: (capability, stage) -> (sum of seconds, number of batches)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[tuple[str, str], list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "mindsight_stage_seconds":
            continue
        for sample in family.samples:
            key = (sample.labels.get("capability", ""), sample.labels.get("stage", ""))
            if sample.name.endswith("_sum"):
                out.setdefault(key, [0.0, 0.0])[0] += sample.value
            elif sample.name.endswith("_count"):
                out.setdefault(key, [0.0, 0.0])[1] += sample.value
    return {k: (v[0], v[1]) for k, v in out.items()}


def new_port() -> int:
    """A free loopback port for a metrics or HTTP endpoint."""
    return free_port()
