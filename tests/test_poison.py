"""The poison suite (issue 8): hostile payloads on both backend lists and impossible photo files, through
the real router and worker processes. After each: the router and the worker are alive, a later good job
is delivered, and the bad item is in the dead-letter queue exactly once with its reason."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import pytest

from shared.embedded_redis import EmbeddedRedis
from tests.fixtures.gallery import GalleryServer, write_jpeg
from tests.fixtures.pipeline import Pipeline
from tests.test_images import png_header_only

pytestmark = pytest.mark.slow

LIMIT = 65536  # MINDSIGHT_MAX_PAYLOAD_BYTES, the default
KEPT = 65536  # workers.poison_pills.RAW_KEPT_CHARS: how much of a refused payload its dead letter keeps
PHOTO = {"photo_id": 1, "user_id": 1, "path": "./uploads/original/x.jpg", "tasks": ["clip"]}
TEXT = {"type": "text_embed", "request_id": 1, "query": "a cat", "model": "tiny-hf"}


@dataclass(frozen=True)
class Case:
    source: str
    raw: str
    reason: str


def deep(opener: str, depth: int) -> str:
    return opener * depth + ("" if opener == "[" else "1") + ("]" if opener == "[" else "}") * depth


def cases() -> Iterator[tuple[str, Case]]:
    too_big = f"over the {LIMIT}-byte limit"
    for source, base in (("photo_tasks", PHOTO), ("text_tasks", TEXT)):
        short = source.split("_")[0]
        yield f"{short}-deep-1000-list", Case(source, deep("[", 1000), "nested deeper than 32")
        yield f"{short}-deep-1000-object", Case(source, deep('{"a":', 1000), "nested deeper than 32")
        yield f"{short}-deep-100000", Case(source, deep("[", 100_000), too_big)
        ids = ("photo_id", "user_id") if source == "photo_tasks" else ("request_id",)
        for field in ids:
            for label, value in (
                ("2**63", 2**63),
                ("2**70", 2**70),
                ("-1", -1),
                ("float", 1.5),
                ("float-whole", 2.0),
                ("true", True),
                ("false", False),
            ):
                yield f"{short}-{field}-{label}", Case(source, json.dumps({**base, field: value}), field)
        strings = ("path", "tasks") if source == "photo_tasks" else ("query", "model", "type")
        for field in strings:
            for label, bad in (("surrogate", "\ud800"), ("low-surrogate", "\udc00"), ("nul", "\x00")):
                value: object = [f"clip{bad}"] if field == "tasks" else f"{base[field]}{bad}"
                yield f"{short}-{field}-{label}", Case(source, json.dumps({**base, field: value}), field)
        yield f"{short}-5MB", Case(source, json.dumps({**base, "pad": "x" * 5 * 1024 * 1024}), too_big)
        many = "tasks" if source == "photo_tasks" else "query"
        yield f"{short}-1e6-{many}", Case(source, json.dumps({**base, many: ["clip"] * 1_000_000}), too_big)


CASES = dict(cases())


class Live:
    """One router and one clip+text worker for the whole module, on the session Redis."""

    def __init__(self, pipeline: Pipeline, root: Path) -> None:
        self.p = pipeline
        self.root = root
        self.ids = count(1_000)
        self.router = pipeline.router()
        self.worker = pipeline.start("worker", "clip", "--also", "text")

    def good_job(self, source: str) -> tuple[str, int]:
        if source == "photo_tasks":
            photo_id, path = self.p.gallery.add_photo(write_jpeg(self.root / f"g{next(self.ids)}.jpg"))
            self.p.push_photo(photo_id, path, ["clip"])
            return "photo", photo_id
        request_id = next(self.ids)
        self.p.redis.lpush("text_tasks", json.dumps({**TEXT, "request_id": request_id}))
        return "text", request_id

    def delivered(self, kind: str, key: int) -> bool:
        if kind == "text":
            return self.p.gallery.text_query(key) is not None
        return any(r["status"] == "done" for r in self.p.gallery.ml_results(key))


@pytest.fixture(scope="module")
def live(
    redis_server: EmbeddedRedis,
    tiny_clip_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("poison")
    if redis_server.proc is None:
        redis_server.start()
    gallery = GalleryServer(root / "gallery").start()
    workdir = root / "run"
    workdir.mkdir()
    pipeline = Pipeline(redis_server.url, gallery, tiny_clip_env, workdir)
    pipeline.redis.flushall()
    try:
        yield Live(pipeline, root)
    finally:
        pipeline.stop_all()
        gallery.stop()


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_poison_is_dead_lettered_once_and_the_pipeline_goes_on(live: Live, case: Case) -> None:
    p = live.p
    dlq = f"{case.source}_dlq"
    p.redis.lpush(case.source, case.raw)
    kind, key = live.good_job(case.source)
    p.wait_for(lambda: live.delivered(kind, key), 120, f"the good {kind} job after the poison")
    kept = case.raw[:KEPT]
    mine = [d for d in p.dead_letters(dlq) if d["raw"] == kept]
    assert len(mine) == 1, [d["error"] for d in p.dead_letters(dlq)][-3:]
    [letter] = mine
    assert letter["error_type"] == "BadPayload" and case.reason in letter["error"], letter["error"]
    assert letter["source_queue"] == case.source and letter["capability"] is None
    assert live.router.poll() is None and live.worker.poll() is None, p.logs()
    assert p.redis.keys("mindsight:router:alive:*"), "the router's heartbeat is withheld"
    assert not p.redis.keys("mindsight:router:unhealthy:*")


FILES: dict[str, tuple[str, Callable[[Path], object] | None]] = {
    "symlink-loop": ("loop.jpg", lambda p: p.symlink_to(p)),
    "enametoolong": ("a" * 300 + ".jpg", None),
    "unknown-user": ("~nosuchuser-4711/x.jpg", None),
    "fifo": ("fifo.jpg", lambda p: os.mkfifo(p)),
    "directory": ("dir.jpg", lambda p: p.mkdir()),
    "bomb-png": ("bomb.png", lambda p: p.write_bytes(png_header_only(200_000, 200_000))),
}
"""Photo files no retry can read: permanent, so dead-lettered on the first attempt (workers.delivery)."""


@pytest.mark.parametrize("name", list(FILES))
def test_impossible_photo_files_are_dead_lettered_once_on_the_first_attempt(live: Live, name: str) -> None:
    p = live.p
    filename, create = FILES[name]
    photo_id, _ = p.gallery.add_photo(write_jpeg(live.root / f"{name}-real.jpg"))
    uploads = p.gallery.root / "uploads" / "original"
    if create is not None:
        create(uploads / filename)
    path = filename if filename.startswith("~") else f"./uploads/original/{filename}"
    p.push_photo(photo_id, path, ["clip"])
    kind, key = live.good_job("photo_tasks")
    p.wait_for(lambda: live.delivered(kind, key), 120, "the good photo after the impossible one")
    p.wait_for(
        lambda: any((d["payload"] or {}).get("photo_id") == photo_id for d in p.dead_letters()),
        120,
        f"the dead letter of {name}",
    )
    mine = [d for d in p.dead_letters() if (d["payload"] or {}).get("photo_id") == photo_id]
    assert len(mine) == 1, mine
    [letter] = mine
    assert letter["attempts"] == 1 and letter["capability"] == "clip", letter
    assert letter["error_type"] in {"ImageDecodeError", "UnsafePath"}, letter
    assert live.router.poll() is None and live.worker.poll() is None, p.logs()
