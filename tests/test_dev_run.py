"""`mindsight dev run`: the whole stack from one command on a machine with no Redis running and no model hub.

The two end-to-end tests run the real command in a subprocess, in a scratch working directory, with
REDIS_URL pointing at a port nothing listens on (so the embedded Redis is started) and every model cache
pointing at empty folders (so the stand-ins are used). The stand-ins are built once per module and
linked into each run's var/ so the runs do not pay for building them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from mindsight.cli.main import cli
from services.dev_stack.model_plan import DLIB_FACE_LABEL, ModelMode, clip_on_disk, plan_models
from services.dev_stack.pidfile import AlreadyRunning, PidFile
from services.dev_stack.preflight import PortInUse, RedisChoice, check_port, choose_redis, dev_tokens
from shared.embedded_redis import free_port, reachable
from shared.models.standins import BLIP_WORDS, TINY_CLIP_DIM, ensure_standins, standin_paths
from shared.settings import Settings
from tests.fixtures.model_hubs import cache_repo

SAMPLE_FACES = {"astronaut.jpg": 1, "chelsea.jpg": 0, "coffee.jpg": 0, "grace_hopper.jpg": 1}
"""Faces the offline retinaface-dlib backend finds in each sample photo (samples/README.md)."""

OWN_SETTINGS = ("MINDSIGHT_", "CLIP_", "CAPTION_", "FACE_", "PROCESSING_", "REDIS_", "EMBED_API_", "HF_")
OWN_NAMES = ("API_BASE_URL", "ACCESS_TOKEN", "PROJECT_ROOT", "UPLOAD_BASE_DIR", "TRANSFORMERS_OFFLINE")


@pytest.fixture(scope="module")
def standin_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete stand-in build, shared by every dev run of this module."""
    root = tmp_path_factory.mktemp("standins") / "standin-models"
    ensure_standins(root)
    return root


class DevRun:
    """`mindsight dev run ARGS` in its own working directory, on free ports, with a clean environment."""

    def __init__(self, workdir: Path, standin_root: Path) -> None:
        self.workdir = workdir
        (workdir / "var").mkdir(parents=True)
        (workdir / "var" / "standin-models").symlink_to(standin_root, target_is_directory=True)
        self.redis_port, self.gallery_port, self.embed_port = free_port(), free_port(), free_port()
        self.metrics_port = free_run(5)
        env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_SETTINGS) and k not in OWN_NAMES}
        env.update({
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",  # nothing listens there
            "HF_HOME": str(workdir / "hf-cache"),  # empty caches: the configured models are "not on disk"
            "FACE_MODEL_DIR": str(workdir / "no-insightface"),
            "MINDSIGHT_MODELS_DIR": str(workdir / "models"),
        })  # fmt: skip
        self.env = env

    def argv(self, *args: str) -> list[str]:
        ports = ["--gallery-port", str(self.gallery_port), "--embed-port", str(self.embed_port)]
        ports += ["--metrics-port", str(self.metrics_port)]
        return [sys.executable, "-m", "mindsight", "--env-file", "/dev/null", "dev", "run", *ports, *args]

    def logs(self) -> str:
        files = sorted((self.workdir / "var" / "logs").glob("*.log"))
        return "\n".join(f"===== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in files)

    def leftovers(self) -> list[str]:
        """Processes still running in the working directory (every child of dev run runs there)."""
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if proc.joinpath("cwd").resolve() == self.workdir.resolve():
                    found.append(proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
        return found

    def assert_all_stopped(self) -> None:
        assert not reachable(f"redis://127.0.0.1:{self.redis_port}/0"), "the embedded Redis is still running"
        check_port(self.gallery_port, "gallery", "--gallery-port")  # raises PortInUse if still served
        check_port(self.embed_port, "embed-api", "--embed-port")
        for port in range(self.metrics_port, self.metrics_port + 5):
            check_port(port, "metrics", "--metrics-port")
        if Path("/proc/self/cwd").exists():
            assert self.leftovers() == []


def free_run(count: int) -> int:
    """The first of `count` consecutive free loopback ports."""
    while True:
        base = free_port()
        try:
            for port in range(base, base + count):
                check_port(port, "x", "x")
        except (PortInUse, OverflowError):
            continue
        return base


@pytest.fixture
def dev_run(tmp_path: Path, standin_root: Path) -> DevRun:
    return DevRun(tmp_path / "work", standin_root)


def photo_blocks(output: str) -> dict[str, str]:
    """file name -> the lines of its block in the report."""
    blocks = re.split(r"\n(?=photo \d+  )", output)
    return {m[1]: b for b in blocks if (m := re.match(r"photo \d+  (\S+)", b))}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_dev_run_shows_every_result_and_exits_after_the_demo(dev_run: DevRun) -> None:
    proc = subprocess.run(
        dev_run.argv("--exit-after-demo", "--logs", "files"),
        cwd=dev_run.workdir, env=dev_run.env, capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{out}\n{dev_run.logs()}"

    assert f"starting an embedded redis-server at redis://127.0.0.1:{dev_run.redis_port}/0" in out
    assert "using tiny RANDOM stand-in models: embeddings are meaningless" in out
    assert "[worker-clip]" not in out  # --logs files: children's lines only in var/logs
    blocks = photo_blocks(out)
    assert sorted(blocks) == sorted(SAMPLE_FACES)
    for name, faces in SAMPLE_FACES.items():
        block = blocks[name]
        assert f"clip      standin-hf {TINY_CLIP_DIM}-d, standin-oc {TINY_CLIP_DIM}-d" in block, block
        caption = re.search(r'caption   "(.+)"  \(embedded by standin-hf, 32-d\)', block)
        assert caption and set(caption[1].split()) <= set(BLIP_WORDS), block
        count = re.search(r"faces     (\d+)", block)
        assert count and int(count[1]) == faces, block
        assert len(re.findall(r"\(\d+,\d+\)-\(\d+,\d+\) score", block)) == faces
    assert re.search(r'text query "a cat" \(request \d+\)  ->  standin-hf 32-d \[', out), out
    assert 'POST /embed_text "a cat"  ->  standin-hf (cosine 1.0000 with the text worker\'s)' in out
    assert '$ mindsight search "a cat"' in out
    ranks = re.findall(r"│\s+(\d)\s+│\s+(\d+)\s+│ http://127\.0\.0\.1:\d+/uploads/original/", out)
    assert [r for r, _ in ranks] == ["1", "2", "3", "4"], out
    assert f"curl -s -X POST http://127.0.0.1:{dev_run.embed_port}/embed_text" in out
    assert out.rstrip().endswith("stopped"), out[-2000:]

    logs = dev_run.workdir / "var" / "logs"
    expected = {"redis", "gallery", "router", "worker-clip", "worker-caption", "worker-face", "worker-text"}
    assert expected | {"embed-api", "enqueue", "search"} <= {p.stem for p in logs.glob("*.log")}
    assert "face ready" in (logs / "worker-face.log").read_text()
    env_file = (dev_run.workdir / "var" / "dev.env").read_text()
    assert f"REDIS_URL='redis://127.0.0.1:{dev_run.redis_port}/0'" in env_file
    assert f"PROCESSING_DEFAULT_FACE_MODEL='{DLIB_FACE_LABEL}'" in env_file
    assert not (dev_run.workdir / "var" / "dev.pids").exists()  # a clean stop forgets its children
    dev_run.assert_all_stopped()


def _read_lines(proc: subprocess.Popen[str], into: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        into.append(line)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigint_stops_every_process_cleanly(dev_run: DevRun) -> None:
    proc = subprocess.Popen(
        dev_run.argv("--single-process", "--no-embed-api"),
        cwd=dev_run.workdir, env=dev_run.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=_read_lines, args=(proc, lines), daemon=True).start()
    try:
        deadline = time.monotonic() + 180
        while not any("Press Ctrl-C" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        # Each service answers /metrics on its own port, and the summary says where.
        for offset, name in enumerate(["router", "worker-all"]):
            url = f"http://127.0.0.1:{dev_run.metrics_port + offset}/metrics"
            assert f"metrics     {url}   ({name})" in "".join(lines)
            answer = httpx.get(url, timeout=10)
            assert answer.status_code == 200 and "mindsight_" in answer.text, answer.text[:500]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.2)  # the reader thread drains the last lines
    out = "".join(lines)
    assert "[worker-all]" in out and "[gallery]" in out  # --logs terminal: prefixed child lines
    assert "SIGINT: stopping" in out and out.rstrip().endswith("stopped"), out[-2000:]
    assert "had to kill" not in out
    assert sorted(photo_blocks(out)) == sorted(SAMPLE_FACES)
    dev_run.assert_all_stopped()


# -- the decisions, without starting anything ----------------------------------------------------


def test_nothing_on_disk_means_standins_and_the_offline_face_backend(
    make_settings: Callable[..., Settings], empty_hub_cache: Path, standin_root: Path, tmp_path: Path
) -> None:
    settings = make_settings(FACE_MODEL_DIR=str(tmp_path / "no-insightface"))
    plan = plan_models(settings, ModelMode.AUTO, standin_root)
    paths = standin_paths(standin_root)
    assert plan.env["CLIP_MODELS"] == f"standin-hf={paths.transformers_clip},standin-oc={paths.open_clip}"
    assert plan.env["PROCESSING_EMBEDDING_DIM"] == str(TINY_CLIP_DIM)
    assert plan.env["CAPTION_MODEL_NAME"] == str(paths.blip)
    assert (
        plan.env["FACE_BACKEND"] == "retinaface-dlib" and plan.env["PROCESSING_FACE_EMBEDDING_DIM"] == "128"
    )
    assert plan.env["MINDSIGHT_OFFLINE"] == "1"
    assert plan.clip_labels == ["standin-hf", "standin-oc"] and plan.captions and plan.faces
    assert any("openai/clip-vit-large-patch14 not on disk" in s for s in plan.standins)
    assert any("Salesforce/blip-image-captioning-base not on disk" in s for s in plan.standins)


def test_models_on_disk_are_used_as_configured(
    make_settings: Callable[..., Settings],
    tiny_clip_env: dict[str, str],
    tiny_blip_dir: Path,
    empty_hub_cache: Path,
    standin_root: Path,
    tmp_path: Path,
) -> None:
    (tmp_path / "faces" / "buffalo_l").mkdir(parents=True)
    (tmp_path / "faces" / "buffalo_l" / "det_10g.onnx").write_bytes(b"")
    settings = make_settings(
        **tiny_clip_env, CAPTION_MODEL_NAME=str(tiny_blip_dir), FACE_MODEL_DIR=str(tmp_path / "faces")
    )
    plan = plan_models(settings, ModelMode.AUTO, tmp_path / "never-built")
    assert plan.standins == [] and plan.clip_labels == ["tiny-hf", "tiny-oc"]
    assert plan.env == {"MINDSIGHT_OFFLINE": "1"}
    assert not (tmp_path / "never-built").exists()
    forced = plan_models(settings, ModelMode.STANDIN, standin_root)
    assert forced.clip_labels == ["standin-hf", "standin-oc"] and len(forced.standins) == 2
    as_is = plan_models(settings, ModelMode.CONFIGURED, tmp_path / "never-built")
    assert as_is.env == {} and as_is.standins == [] and as_is.clip_labels == ["tiny-hf", "tiny-oc"]


def test_a_complete_hub_cache_entry_counts_as_on_disk(
    make_settings: Callable[..., Settings], empty_hub_cache: Path
) -> None:
    settings = make_settings()
    assert not clip_on_disk("openai/clip-vit-base-patch32", settings)
    cache_repo(empty_hub_cache, "openai/clip-vit-base-patch32", ["config.json"])
    assert not clip_on_disk("openai/clip-vit-base-patch32", settings)  # config without weights
    cache_repo(empty_hub_cache, "openai/clip-vit-large-patch14", ["config.json", "model.safetensors"])
    assert clip_on_disk("openai/clip-vit-large-patch14", settings)
    cache_repo(
        empty_hub_cache, "laion/some-open-clip", ["open_clip_config.json", "open_clip_model.safetensors"]
    )
    assert clip_on_disk("hf-hub:laion/some-open-clip", settings)
    assert not clip_on_disk("./no/such/folder", settings)


def test_redis_choice(redis_url: str) -> None:
    assert choose_redis(redis_url) == RedisChoice(redis_url, embedded=False)
    private = choose_redis(redis_url, embedded=True)  # --embedded-redis: keep off the answering one
    assert private.embedded and f":{private.port}/" not in redis_url
    port = free_port()  # nothing listens: an embedded Redis on REDIS_URL's own port and database
    expected = RedisChoice(f"redis://127.0.0.1:{port}/3", embedded=True, port=port)
    assert choose_redis(f"redis://localhost:{port}/3") == expected
    with _listening() as taken:  # something that is not a Redis: keep out of its way
        choice = choose_redis(f"redis://127.0.0.1:{taken}/0")
    assert choice.embedded and choice.port != taken


def test_dev_tokens_are_generated_only_when_unset(make_settings: Callable[..., Settings]) -> None:
    generated = dev_tokens(make_settings(PROCESSING_INTERNAL_TOKEN="changeme", ACCESS_TOKEN=None))
    assert generated.generated == ("PROCESSING_INTERNAL_TOKEN", "ACCESS_TOKEN")
    assert len(generated.internal) >= 24 and generated.internal != generated.access
    kept = dev_tokens(make_settings(PROCESSING_INTERNAL_TOKEN="a-real-token-123", ACCESS_TOKEN="jwt"))
    assert (kept.internal, kept.access, kept.generated) == ("a-real-token-123", "jwt", ())


@pytest.mark.parametrize("flag", ["--gallery-port", "--embed-port", "--metrics-port"])
def test_a_taken_port_is_refused_before_anything_starts(
    flag: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    make_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    with _listening() as taken:
        with pytest.raises(PortInUse, match=f"port {taken} .*{flag}"):
            check_port(taken, "x", flag)
        args = ["--gallery-port", str(free_port()), "--embed-port", str(free_port()), "--metrics-port", "0"]
        args += [flag, str(taken)]
        argv = ["--env-file", "/dev/null", "dev", "run", "--var-dir", str(tmp_path / "var"), *args]
        result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert f"port {taken}" in result.output and "already in use" in result.output and flag in result.output
    assert not (tmp_path / "var" / "logs").exists() or not any((tmp_path / "var" / "logs").iterdir())


def test_children_of_an_earlier_run_block_the_next_one(tmp_path: Path) -> None:
    pids = PidFile(tmp_path / "dev.pids")
    pids.refuse_if_running()  # nothing recorded: fine
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "mindsight-worker"])
    try:
        pids.record("worker-clip", child.pid)
        pids.record("router", 2**22 + 1)  # dead (beyond pid_max): not reported
        with pytest.raises(AlreadyRunning, match=rf"worker-clip \(pid {child.pid}\).*kill -- -{child.pid}$"):
            pids.refuse_if_running()
    finally:
        child.kill()
        child.wait()
    pids.refuse_if_running()
    assert not pids.path.exists()


def test_a_child_still_in_exec_counts_as_running(tmp_path: Path) -> None:
    """Right after Popen() returns, the child's /proc/PID/cmdline is often still empty (mid-exec)."""
    pids = PidFile(tmp_path / "dev.pids")
    for _ in range(20):  # on the old code about 4 in 5 of these were missed
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "mindsight-worker"])
        try:
            pids.record("worker-clip", child.pid)
            assert pids.alive() == [("worker-clip", child.pid)]
        finally:
            child.kill()
            child.wait()
            pids.clear()


def test_an_exited_child_not_yet_reaped_is_not_running(tmp_path: Path) -> None:
    pids = PidFile(tmp_path / "dev.pids")
    child = subprocess.Popen([sys.executable, "-c", "pass", "mindsight-worker"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left a zombie: empty cmdline
        pids.record("worker-clip", child.pid)
        assert pids.alive() == []
    finally:
        child.wait()


class _listening:
    """A TCP listener on a free loopback port (a port that is taken, but not by Redis)."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
