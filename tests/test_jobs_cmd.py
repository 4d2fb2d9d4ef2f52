"""`mindsight jobs ls|rm` against a real Redis: an operator sees and removes a stuck job without redis-cli."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis
from click.testing import CliRunner, Result

from mindsight.cli.main import cli
from shared.dead_letter import DeadLetterQueue
from shared.payloads import Capability
from shared.settings import Settings
from workers.dispatch import Dispatcher, rq_queue


def photo(pid: int) -> dict[str, object]:
    return {"photo_id": pid, "user_id": 1, "path": f"./uploads/original/{pid}.jpg", "tasks": ["clip"]}


@pytest.fixture
def dispatcher(
    redis_client: redis.Redis, make_settings: Callable[..., Settings], redis_url: str
) -> Dispatcher:
    settings = make_settings(REDIS_URL=redis_url)
    return Dispatcher(redis_client, settings.worker, settings.redis)


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--env-file", "/dev/null", "jobs", *args], input=input)


def add(dispatcher: Dispatcher, cap: Capability, *pids: int) -> str:
    with dispatcher.connection.pipeline() as pipe:
        job_id = dispatcher.add(pipe, cap, [photo(p) for p in pids])
        pipe.execute()
    return job_id


def listed(*args: str) -> dict[str, dict[str, object]]:
    result = run("ls", "--json", *args)
    assert result.exit_code == 0, result.output
    return {row["id"]: row for row in map(json.loads, result.output.splitlines())}


def test_ls_shows_queued_and_stranded_jobs_with_their_photo_ids(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    queued = add(dispatcher, Capability.CLIP, 1, 2)
    stranded = add(dispatcher, Capability.FACE, 3)
    face = rq_queue(redis_client, Capability.FACE)
    redis_client.lmove(face.key, face.intermediate_queue_key)  # what a worker stopped mid-dequeue leaves
    rows = listed()
    assert rows[queued]["place"] == "queued" and rows[queued]["item_ids"] == [1, 2]
    assert rows[stranded]["place"] == "intermediate" and rows[stranded]["capability"] == "face"
    assert set(listed("-c", "clip")) == {queued}
    assert set(listed("--where", "intermediate")) == {stranded}
    assert run("ls").exit_code == 0


def test_rm_dead_letters_the_payloads_in_the_same_step(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    wedged, other = add(dispatcher, Capability.CLIP, 7), add(dispatcher, Capability.CLIP, 8)
    result = run("rm", wedged, "--yes")
    assert result.exit_code == 0, result.output
    assert "1 payload(s) dead-lettered" in result.output
    assert rq_queue(redis_client, Capability.CLIP).get_job_ids() == [other]
    [letter] = [i.letter for i in DeadLetterQueue(redis_client, "photo_tasks_dlq").scan()]
    assert letter.error_type == "removed_by_operator" and letter.payload == photo(7)
    assert set(listed()) == {other}


def test_rm_drop_and_refusals(dispatcher: Dispatcher, redis_client: redis.Redis) -> None:
    job_id = add(dispatcher, Capability.CLIP, 9)
    assert run("rm", "nope", "--yes").exit_code != 0
    assert run("rm", job_id, input="n\n").exit_code != 0 and set(listed()) == {job_id}
    assert run("rm", job_id, "--drop", "--yes").exit_code == 0
    assert listed() == {} and redis_client.llen("photo_tasks_dlq") == 0


def test_a_bulk_lane_job_is_listed_and_removed_from_its_own_queue(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    from shared.lanes import Lane

    with redis_client.pipeline() as pipe:
        job_id = dispatcher.add(
            pipe, Capability.CLIP, [photo(5)], policy=dispatcher.policy_for(Capability.CLIP, Lane.BULK)
        )
        pipe.execute()
    bulk = rq_queue(redis_client, Capability.CLIP, Lane.BULK)
    assert listed()[job_id]["queue"] == bulk.name != rq_queue(redis_client, Capability.CLIP).name
    assert run("rm", job_id, "--yes").exit_code == 0
    assert bulk.count == 0 and redis_client.llen("photo_tasks_dlq") == 1
