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


# -- hostile values (issue 8): everything the gallery cannot store or a worker cannot use is BadPayload ---
TEXT = {"type": "text_embed", "request_id": 7, "query": "a cat", "model": "clip14"}
MAX_ID = 2**63 - 1


@pytest.mark.parametrize("field", ["photo_id", "user_id"])
@pytest.mark.parametrize("value", [2**63, 2**70, 0, -1, 1.0, 1.5, True, False, "1", None])
def test_photo_ids_are_signed_64_bit_positive_ints(field: str, value: object) -> None:
    with pytest.raises(BadPayload, match=field):
        parse_photo_job(json.dumps({**GOOD, field: value}))


@pytest.mark.parametrize("value", [2**63, 2**70, 0, -1, 2.0, True])
def test_request_ids_are_signed_64_bit_positive_ints(value: object) -> None:
    with pytest.raises(BadPayload, match="request_id"):
        parse_text_job(json.dumps({**TEXT, "request_id": value}))


def test_the_largest_id_the_gallery_can_store_is_accepted() -> None:
    assert parse_photo_job(json.dumps({**GOOD, "photo_id": MAX_ID, "user_id": MAX_ID})).photo_id == MAX_ID
    assert parse_text_job(json.dumps({**TEXT, "request_id": MAX_ID})).request_id == MAX_ID


@pytest.mark.parametrize("bad", ["\ud800", "\udfff", "\x00"], ids=["high-surrogate", "low-surrogate", "nul"])
@pytest.mark.parametrize("field", ["path", "tasks"])
def test_surrogates_and_nul_in_photo_strings_are_refused(field: str, bad: str) -> None:
    value = [f"clip{bad}"] if field == "tasks" else f"./uploads/x{bad}.jpg"
    raw = json.dumps({**GOOD, field: value})  # ensure_ascii: valid JSON escapes, as an attacker sends them
    with pytest.raises(BadPayload, match=field):
        parse_photo_job(raw)


@pytest.mark.parametrize("bad", ["\ud800", "\udfff", "\x00"], ids=["high-surrogate", "low-surrogate", "nul"])
@pytest.mark.parametrize("field", ["query", "model", "type"])
def test_surrogates_and_nul_in_text_strings_are_refused(field: str, bad: str) -> None:
    with pytest.raises(BadPayload, match=field):
        parse_text_job(json.dumps({**TEXT, field: f"{TEXT[field]}{bad}"}))


def test_a_surrogate_pair_is_a_real_character_and_accepted() -> None:
    assert parse_text_job(json.dumps({**TEXT, "query": "cat \U0001f431"})).query == "cat \U0001f431"


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deep_nesting_is_refused_before_json_can_recurse(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    inner = "1" if opener != "[" else ""
    raw = opener * depth + inner + closer * depth
    with pytest.raises(BadPayload, match="nested deeper than 32"):
        parse_photo_job(raw, max_bytes=10**7)
    nested_field = json.dumps({**GOOD, "meta": json.loads("[" * 30 + "]" * 30)})
    assert parse_photo_job(nested_field).photo_id == 1  # moderate nesting in an ignored field is fine


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    job = parse_photo_job(json.dumps({**GOOD, "path": "./uploads/" + "[{" * 200 + '\\"x.jpg'}))
    assert job.path.startswith("./uploads/[{")


def test_a_five_megabyte_payload_is_refused_by_size() -> None:
    with pytest.raises(BadPayload, match="over the 65536-byte limit"):
        parse_photo_job(json.dumps({**GOOD, "pad": "x" * 5 * 1024 * 1024}), max_bytes=65536)


def test_a_million_tasks_are_refused_even_under_a_generous_size_limit() -> None:
    raw = json.dumps({**GOOD, "tasks": ["clip"] * 1_000_000})
    with pytest.raises(BadPayload, match="tasks"):
        parse_photo_job(raw, max_bytes=len(raw))
