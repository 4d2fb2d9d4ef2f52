"""Dead-letter tooling against a real Redis: list, inspect, count, requeue (atomically), purge."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis
from click.testing import CliRunner, Result

from mindsight.cli.main import cli
from shared.dead_letter import DeadLetter, DeadLetterQueue
from shared.errors import ImageDecodeError, UnsafePath
from shared.payloads import Capability
from shared.settings import Settings
from workers.dispatch import Dispatcher, rq_queue
from workers.requeue import requeue


def photo(pid: int) -> dict[str, object]:
    return {"photo_id": pid, "user_id": 1, "path": f"./uploads/original/{pid}.jpg", "tasks": ["clip", "face"]}


@pytest.fixture
def filled(redis_client: redis.Redis) -> DeadLetterQueue:
    dlq = DeadLetterQueue(redis_client, "photo_tasks_dlq")
    dlq.push(
        DeadLetter.from_exception(ImageDecodeError("truncated"), capability="clip", payload=photo(1), id="a1")
    )
    dlq.push(DeadLetter.from_exception(UnsafePath("outside"), capability="face", payload=photo(2), id="b2"))
    dlq.push(
        DeadLetter.from_exception(ImageDecodeError("bomb"), capability="face", payload=photo(3), id="c3")
    )
    dlq.push(DeadLetter(capability=None, error_type="BadPayload", error="not JSON", raw="{oops", id="d4"))
    redis_client.lpush("photo_tasks_dlq", json.dumps(photo(9)))  # written by the legacy runner
    text = DeadLetterQueue(redis_client, "text_tasks_dlq")
    text.push(
        DeadLetter(
            capability="text",
            error_type="UnknownModel",
            error="nope",
            payload={"type": "text_embed", "request_id": 5, "query": "x", "model": "zz"},
            id="t5",
        )
    )
    return dlq


@pytest.fixture
def run(redis_url: str, make_settings: Callable[..., Settings]) -> Callable[..., Result]:
    make_settings(REDIS_URL=redis_url)

    def invoke(*args: str, input: str | None = None) -> Result:
        result = CliRunner().invoke(cli, ["--env-file", "/dev/null", "dlq", *args], input=input)
        return result

    return invoke


def ids(result: Result) -> set[str]:
    return {json.loads(line)["id"] for line in result.output.splitlines() if line.startswith("{")}


def test_ls_filters_by_capability_error_type_and_queue(
    filled: DeadLetterQueue, run: Callable[..., Result]
) -> None:
    assert len(ids(run("ls", "--json"))) == 6
    assert ids(run("ls", "--json", "-c", "face")) == {"b2", "c3"}
    assert ids(run("ls", "--json", "-e", "ImageDecodeError")) == {"a1", "c3"}
    assert ids(run("ls", "--json", "--queue", "text")) == {"t5"}
    table = run("ls")
    assert table.exit_code == 0 and "ImageDecodeError" in table.output and "legacy" in table.output


def test_show_and_stats(filled: DeadLetterQueue, run: Callable[..., Result]) -> None:
    shown = json.loads(run("show", "b2").output)
    assert shown["payload"]["photo_id"] == 2 and shown["error"] == "outside" and shown["capability"] == "face"
    assert run("show", "nope").exit_code != 0
    stats = json.loads(run("stats", "--json").output)
    assert stats["photo"]["total"] == 5 and stats["photo"]["by_capability"]["face"] == 2
    assert stats["text"]["by_error_type"] == {"UnknownModel": 1}


def test_requeue_reruns_only_the_failed_capability(
    filled: DeadLetterQueue, run: Callable[..., Result], redis_client: redis.Redis
) -> None:
    dry = run("requeue", "-c", "face", "--dry-run")
    assert "dry run: 2 entries" in dry.output and len(filled) == 5
    result = run("requeue", "-c", "face")
    assert result.exit_code == 0, result.output
    assert "requeued 2 of 2" in result.output
    face_jobs = rq_queue(redis_client, Capability.FACE).get_jobs()
    assert sorted(p["photo_id"] for j in face_jobs for p in j.args[0]["payloads"]) == [2, 3]
    assert rq_queue(redis_client, Capability.CLIP).count == 0  # clip of photos 2 and 3 is not redone
    assert {i.letter.id for i in filled.scan()} == {
        "a1",
        "d4",
        filled.select(error_type="legacy")[0].letter.id,
    }
    # Fresh retries: the operator fixed the cause.
    assert all(j.retries_left for j in face_jobs)


def test_requeue_skips_malformed_and_sends_legacy_entries_whole(
    filled: DeadLetterQueue, run: Callable[..., Result], redis_client: redis.Redis
) -> None:
    result = run("requeue", "--all", "--queue", "photo")
    assert "requeued 4 of 5" in result.output
    assert "malformed payload" in result.output
    assert [json.loads(x)["photo_id"] for x in redis_client.lrange("photo_tasks", 0, -1)] == [9]
    assert [i.letter.id for i in filled.scan()] == ["d4"]


def test_requeue_needs_a_selection(filled: DeadLetterQueue, run: Callable[..., Result]) -> None:
    assert run("requeue").exit_code == 2
    assert run("purge").exit_code == 2


def test_an_entry_is_never_requeued_twice(
    filled: DeadLetterQueue, redis_client: redis.Redis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    dispatcher = Dispatcher(redis_client, settings.worker, settings.redis)
    items = filled.select(ids={"a1"})
    first = requeue(redis_client, dispatcher, filled, items, "photo_tasks")
    # A second operator (or a rerun after a crash) holding the same stale listing gets nothing.
    second = requeue(redis_client, dispatcher, filled, items, "photo_tasks")
    assert first.requeued == ["a1"] and second.requeued == []
    assert second.skipped == [("a1", "no longer in the dead-letter queue")]
    assert rq_queue(redis_client, Capability.CLIP).count == 1


def test_requeue_is_atomic_when_enqueueing_fails(
    filled: DeadLetterQueue,
    redis_client: redis.Redis,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crash between "enqueue" and "remove" cannot happen: both are one transaction."""
    settings = make_settings()
    dispatcher = Dispatcher(redis_client, settings.worker, settings.redis)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed half-way")

    monkeypatch.setattr(DeadLetterQueue, "remove", boom)
    with pytest.raises(RuntimeError):
        requeue(redis_client, dispatcher, filled, filled.select(ids={"a1"}), "photo_tasks")
    assert rq_queue(redis_client, Capability.CLIP).count == 0  # nothing enqueued ...
    assert filled.select(ids={"a1"})  # ... and nothing lost


def test_purge(filled: DeadLetterQueue, run: Callable[..., Result]) -> None:
    assert "dry run: 2 entries" in run("purge", "-e", "ImageDecodeError", "--dry-run").output
    assert run("purge", "-e", "ImageDecodeError", input="n\n").exit_code != 0
    assert len(filled) == 5
    assert "purged 2" in run("purge", "-e", "ImageDecodeError", "--yes").output
    assert {i.letter.error_type for i in filled.scan()} == {"UnsafePath", "BadPayload", "legacy"}
