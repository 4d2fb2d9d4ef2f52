"""Wire-contract parsing: what the backend pushes, and every way it can be wrong."""

from __future__ import annotations

import json

import pytest

from shared.errors import BadPayload
from shared.payloads import Capability, parse_photo_job, parse_text_job

GOOD = {
    "photo_id": 1,
    "user_id": 1,
    "path": "./uploads/original/x.jpg",
    "tasks": ["thumbnail", "clip", "face"],
}


def test_backend_example_parses_and_ignores_thumbnail() -> None:
    job = parse_photo_job(json.dumps(GOOD))
    assert job.photo_id == 1 and job.path == "./uploads/original/x.jpg"
    assert job.capabilities(caption_enabled=True) == [Capability.CLIP, Capability.CAPTION, Capability.FACE]
    assert job.capabilities(caption_enabled=False) == [Capability.CLIP, Capability.FACE]


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        (["faces"], [Capability.FACE]),
        (["caption"], [Capability.CAPTION]),
        (["thumbnail", "exif", "something-new"], []),
        (["CLIP"], [Capability.CLIP, Capability.CAPTION]),
    ],
)
def test_task_names(tasks: list[str], expected: list[Capability]) -> None:
    assert parse_photo_job(json.dumps({**GOOD, "tasks": tasks})).capabilities(True) == expected


def test_explicit_caption_is_dropped_when_captioning_disabled() -> None:
    assert parse_photo_job(json.dumps({**GOOD, "tasks": ["caption"]})).capabilities(False) == []


def test_unknown_extra_fields_are_ignored() -> None:
    assert parse_photo_job(json.dumps({**GOOD, "priority": 3, "meta": {"a": 1}})).photo_id == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "path"}), "path"),
        (json.dumps({**GOOD, "photo_id": "1"}), "photo_id"),
        (json.dumps({**GOOD, "photo_id": 1.5}), "photo_id"),
        (json.dumps({**GOOD, "tasks": "clip"}), "tasks"),
        (json.dumps({**GOOD, "path": "  "}), "path is empty"),
        (b"\xff\xfe\x00", "not valid JSON"),
    ],
)
def test_bad_photo_payloads_say_why(raw: str | bytes, reason: str) -> None:
    with pytest.raises(BadPayload, match=reason):
        parse_photo_job(raw)


def test_oversized_payload_is_refused_before_parsing() -> None:
    raw = json.dumps({**GOOD, "pad": "x" * 10_000})
    with pytest.raises(BadPayload, match="over the 1024-byte limit"):
        parse_photo_job(raw, max_bytes=1024)


def test_text_jobs() -> None:
    job = parse_text_job('{"type": "text_embed", "request_id": 7, "query": "a cat", "model": "clip14"}')
    assert (job.request_id, job.query, job.model) == (7, "a cat", "clip14")
    assert parse_text_job('{"type": "text_embed", "request_id": 8, "query": "dog"}').model is None
    with pytest.raises(BadPayload, match="query is empty"):
        parse_text_job('{"type": "text_embed", "request_id": 8, "query": "  "}')
    with pytest.raises(BadPayload, match="type"):
        parse_text_job('{"type": "image", "request_id": 8, "query": "dog"}')
