"""`mindsight serve gallery-dev` as a real process, and the `serve` group's commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from mindsight.cli.main import cli
from shared.embedded_redis import free_port
from tests.fixtures.gallery import write_jpeg
from tests.fixtures.settings import TEST_TOKEN


def test_serve_group_lists_both_services_without_importing_them() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    assert "gallery-dev" in result.output and "embed-api" in result.output
    assert "--port" in CliRunner().invoke(cli, ["serve", "embed-api", "--help"]).output


def test_placeholder_internal_token_is_refused(tmp_path: Path) -> None:
    argv = ["--env-file", "/dev/null", "serve", "gallery-dev", "--root", str(tmp_path / "g")]
    result = CliRunner().invoke(cli, argv, env={"PROCESSING_INTERNAL_TOKEN": "changeme"})
    assert result.exit_code == 2 and "PROCESSING_INTERNAL_TOKEN" in result.output
    assert not (tmp_path / "g").exists()


def test_gallery_dev_prints_a_token_and_serves(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "ACCESS_TOKEN"}
    env["PROCESSING_INTERNAL_TOKEN"] = TEST_TOKEN
    root = tmp_path / "g"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mindsight",
            "--env-file",
            "/dev/null",
            "serve",
            "gallery-dev",
            "--port",
            str(port),
            "--root",
            str(root),
        ],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        token = None
        for line in proc.stderr:
            match = re.search(r"export ACCESS_TOKEN=(\S+)", line)
            if match:
                token = match.group(1)
            if "PROJECT_ROOT=" in line:
                assert str(root.resolve()) in line
                break
        assert token, "no generated token printed"
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gallery-dev did not come up"
            time.sleep(0.1)
        src = write_jpeg(tmp_path / "a.jpg")
        auth = {"authorization": f"Bearer {token}"}
        photo = httpx.post(
            f"{base}/api/photos", headers=auth, files={"file": ("a.jpg", src.read_bytes())}
        ).json()
        assert (root / photo["path"]).is_file()
        fault = httpx.post(
            f"{base}/_dev/faults", json={"status": 503, "count": 1}, headers={"x-internal-token": TEST_TOKEN}
        )
        assert fault.status_code == 200  # dev routes are on
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert (root / "gallery.sqlite3").is_file()
