"""`mindsight enqueue` against a real gallery and a real Redis."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from mindsight.cli.main import cli
from shared.embedded_redis import free_port
from shared.payloads import parse_photo_job, parse_text_job
from shared.settings import Settings
from tests.fixtures.gallery import GalleryServer, write_jpeg

Run = Callable[..., Result]


@pytest.fixture
def run(
    tmp_path: Path, gallery_server: GalleryServer, redis_url: str, make_settings: Callable[..., Settings]
) -> Run:
    """Invoke `mindsight enqueue ...` with settings pointing at the test gallery and Redis."""

    def invoke(*args: str, **env: object) -> Result:
        make_settings(**{**gallery_server.env(), "REDIS_URL": redis_url, **env})
        argv = ["--env-file", "/dev/null", "enqueue", *args]
        return CliRunner().invoke(cli, argv, catch_exceptions=False)

    return invoke


def _photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    write_jpeg(folder / "a.jpg", (255, 0, 0))
    write_jpeg(folder / "nested" / "b.JPEG", (0, 255, 0))
    write_jpeg(folder / "nested" / "c.png", (0, 0, 255))
    (folder / "notes.txt").write_text("not a photo")
    return folder


def _queue(redis_client: redis.Redis, name: str) -> list[dict]:
    # LPUSH puts the newest at the head; reverse to get push order.
    return [json.loads(raw) for raw in reversed(redis_client.lrange(name, 0, -1))]


def test_uploads_folder_and_queues_one_job_per_image(
    run: Run, tmp_path: Path, gallery_server: GalleryServer, redis_client: redis.Redis
) -> None:
    result = run(str(_photos(tmp_path)), "--tasks", "clip,face")
    assert result.exit_code == 0, result.output
    assert "[1/3]" in result.output and "[3/3]" in result.output
    assert "3 photo job(s) queued on photo_tasks, 0 failed" in result.output

    jobs = _queue(redis_client, "photo_tasks")
    assert len(jobs) == 3
    for job, name in zip(jobs, ["a.jpg", "b.JPEG", "c.png"], strict=True):
        parsed = parse_photo_job(json.dumps(job))
        assert parsed.tasks == ["clip", "face"] and parsed.user_id == 1
        stored = gallery_server.root / parsed.path
        assert stored.read_bytes() == (tmp_path / "photos").rglob(name).__next__().read_bytes()
        assert gallery_server.photo(parsed.photo_id)["path"] == parsed.path


def test_text_job_gets_increasing_request_ids(run: Run, redis_client: redis.Redis) -> None:
    assert run("--text", "a cat on the beach", "--model", "clip14").exit_code == 0
    result = run("--text", "a dog")
    assert result.exit_code == 0, result.output
    jobs = [parse_text_job(json.dumps(j)) for j in _queue(redis_client, "text_tasks")]
    assert [(j.request_id, j.query, j.model) for j in jobs] == [
        (1, "a cat on the beach", "clip14"),
        (2, "a dog", None),
    ]
    assert redis_client.llen("photo_tasks") == 0


def test_custom_queue_names_and_single_file(run: Run, tmp_path: Path, redis_client: redis.Redis) -> None:
    photo = write_jpeg(tmp_path / "one.jpg")
    result = run(str(photo), "--tasks", "face", REDIS_QUEUE_NAME="my_photos")
    assert result.exit_code == 0, result.output
    assert [j["tasks"] for j in _queue(redis_client, "my_photos")] == [["face"]]


def test_rejected_upload_is_reported_and_others_continue(
    run: Run, tmp_path: Path, redis_client: redis.Redis
) -> None:
    folder = _photos(tmp_path)
    (folder / "empty.jpg").write_bytes(b"")
    result = run(str(folder))
    assert result.exit_code == 1
    assert "upload rejected" in result.output and "empty" in result.output
    assert redis_client.llen("photo_tasks") == 3


def test_redis_unreachable_names_redis_url(run: Run, tmp_path: Path, gallery_server: GalleryServer) -> None:
    port = free_port()
    result = run(str(_photos(tmp_path)), REDIS_URL=f"redis://:s3cret-redis-pw@127.0.0.1:{port}/0")
    assert result.exit_code != 0
    assert f"REDIS_URL=redis://:***@127.0.0.1:{port}/0" in result.output
    assert "s3cret" not in result.output and len(result.output.strip().splitlines()) == 1
    assert gallery_server.store.list_photos(1, 10, 0)[1] == 0  # nothing uploaded before the check


def test_gallery_unreachable_names_api_base_url(run: Run, tmp_path: Path, redis_client: redis.Redis) -> None:
    port = free_port()
    url = f"http://alice:s3cret-gallery-pw@127.0.0.1:{port}"
    result = run(str(_photos(tmp_path)), API_BASE_URL=url, MINDSIGHT_GALLERY_RETRIES=0)
    assert result.exit_code != 0
    assert f"API_BASE_URL=http://alice:***@127.0.0.1:{port}" in result.output
    assert "s3cret" not in result.output  # nor in the client's own message, which names its base URL
    assert redis_client.llen("photo_tasks") == 0


def test_wrong_access_token_stops_at_once(run: Run, tmp_path: Path, redis_client: redis.Redis) -> None:
    result = run(str(_photos(tmp_path)), ACCESS_TOKEN="not-a-user-token")
    assert result.exit_code != 0 and "refused ACCESS_TOKEN" in result.output
    assert redis_client.llen("photo_tasks") == 0


def test_missing_access_token_is_a_config_error(run: Run, tmp_path: Path) -> None:
    result = run(str(_photos(tmp_path)), ACCESS_TOKEN=None)
    assert result.exit_code == 2 and "ACCESS_TOKEN is not set" in result.output


def test_bad_arguments(run: Run, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    assert run().exit_code == 2
    result = run(str(notes))
    assert result.exit_code == 2 and "not an image" in result.output
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert "no image files" in run(str(empty)).output
