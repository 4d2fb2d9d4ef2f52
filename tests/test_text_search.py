"""`mindsight search` end to end: tiny CLIP models on disk, the reference gallery over real HTTP."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image
from skimage import data

from mindsight.cli.main import cli
from services.text_search import load_query_model
from shared.gallery_client import GalleryClient
from shared.gallery_contract import MlResultIn
from shared.images import load_image
from shared.models.clip.registry import ClipModel
from shared.settings import Settings
from tests.fixtures.gallery import GalleryServer

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


@pytest.fixture
def indexed(
    gallery_server: GalleryServer,
    make_settings: Callable[..., Settings],
    tiny_clip_env: dict[str, str],
    tiny_clip_models: dict[str, ClipModel],
    tmp_path: Path,
) -> dict[str, Any]:
    """Four real photos in the gallery, each with an image embedding from both tiny models."""
    settings = make_settings(**tiny_clip_env, **gallery_server.env(), MINDSIGHT_DEVICE="cpu")
    client = GalleryClient(settings.gallery)
    ids: dict[str, int] = {}
    paths: dict[str, Path] = {}
    vectors: dict[str, dict[int, np.ndarray]] = {label: {} for label in tiny_clip_models}
    for name in PHOTOS:
        path = tmp_path / "src" / f"{name}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(getattr(data, name)()).convert("RGB").save(path, quality=90)
        photo_id, _ = gallery_server.add_photo(path)
        ids[name], paths[name] = photo_id, path
        for label, model in tiny_clip_models.items():
            # Decoded as workers and the CLI decode it (DCT-scaled JPEG), so `--image` finds distance 0.
            vector = model.image.predict([load_image(path, min_side=model.image.image_size)])[0]
            vectors[label][photo_id] = vector
            body = MlResultIn(
                model=label, modality="image", embedding=vector.tolist(), processing_status="done"
            )
            client.post_ml_result(photo_id, body)
    client.close()
    return {"settings": settings, "ids": ids, "paths": paths, "vectors": vectors}


def _search(*args: str) -> Result:
    return CliRunner().invoke(cli, ["--env-file", "/dev/null", "search", *args])


def _json(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.mark.parametrize("label", ["tiny-hf", "tiny-oc"])
def test_image_search_finds_the_photo_itself_first(indexed: dict[str, Any], label: str) -> None:
    out = _json(_search("--image", str(indexed["paths"]["chelsea"]), "--model", label, "--json"))
    assert out["model"] == label
    items = out["items"]
    assert [i["rank"] for i in items] == [1, 2, 3, 4]
    assert items[0]["photo_id"] == indexed["ids"]["chelsea"]
    assert items[0]["distance"] == pytest.approx(0.0, abs=1e-5)
    assert all(a["distance"] <= b["distance"] for a, b in zip(items, items[1:], strict=False))


def test_text_search_ranks_like_local_cosine_distance(
    indexed: dict[str, Any], tiny_clip_models: dict[str, ClipModel]
) -> None:
    out = _json(_search("a cat on the beach", "--json"))
    assert out["model"] == "tiny-hf"  # the default label
    query = tiny_clip_models["tiny-hf"].text.predict(["a cat on the beach"])[0]
    expected = sorted(
        (1.0 - float(np.dot(query, v)), pid) for pid, v in indexed["vectors"]["tiny-hf"].items()
    )
    assert [i["photo_id"] for i in out["items"]] == [pid for _, pid in expected]
    np.testing.assert_allclose([i["distance"] for i in out["items"]], [d for d, _ in expected], atol=1e-4)
    gallery_url = indexed["settings"].gallery.api_base_url
    assert all(i["url"].startswith(gallery_url + "/") for i in out["items"])


def test_limit_and_table_output(indexed: dict[str, Any]) -> None:
    assert len(_json(_search("a dog", "--limit", "2", "--json"))["items"]) == 2
    table = _search("a dog", "--model", "tiny-oc")
    assert table.exit_code == 0, table.output
    assert "rank" in table.stdout and "distance" in table.stdout and "tiny-oc" in table.stdout
    for photo_id in indexed["ids"].values():
        assert f" {photo_id} " in table.stdout


def test_only_the_requested_model_is_loaded(
    make_settings: Callable[..., Settings], tiny_clip_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(**tiny_clip_env, MINDSIGHT_DEVICE="cpu")
    with caplog.at_level(logging.INFO, logger="shared.models.clip.registry"):
        model = load_query_model(settings, "tiny-oc")
    assert model.label == "tiny-oc" and model.text.loaded
    loaded = [r.getMessage() for r in caplog.records if "loaded CLIP model" in r.getMessage()]
    assert len(loaded) == 1 and "label=tiny-oc" in loaded[0], loaded


def test_missing_access_token_is_a_config_error(
    make_settings: Callable[..., Settings], tiny_clip_env: dict[str, str], gallery_server: GalleryServer
) -> None:
    make_settings(**tiny_clip_env, **{**gallery_server.env(), "ACCESS_TOKEN": None})
    result = _search("a cat")
    assert result.exit_code == 2 and "ACCESS_TOKEN is not set" in result.output


@pytest.mark.parametrize(
    ("env", "args", "needle"),
    [
        ({"ACCESS_TOKEN": "not-a-valid-token"}, ["a cat"], "is ACCESS_TOKEN still valid"),
        ({}, ["a cat", "--model", "ViT-H-14"], "tiny-hf, tiny-oc"),
        (
            {"API_BASE_URL": "http://127.0.0.1:9", "MINDSIGHT_GALLERY_RETRIES": "0"},
            ["a cat"],
            "GalleryUnavailable",
        ),
    ],
)
def test_failures_are_one_clear_line(
    make_settings: Callable[..., Settings],
    tiny_clip_env: dict[str, str],
    gallery_server: GalleryServer,
    env: dict[str, str],
    args: list[str],
    needle: str,
) -> None:
    make_settings(**tiny_clip_env, **{**gallery_server.env(), **env}, MINDSIGHT_DEVICE="cpu")
    result = _search(*args)
    assert result.exit_code == 1 and needle in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [[], ["   "], ["a cat", "--image", __file__]])
def test_exactly_one_of_text_and_image(args: list[str]) -> None:
    result = _search(*args)
    assert result.exit_code == 2 and "exactly one" in result.output


def test_an_unreadable_image_is_reported(
    make_settings: Callable[..., Settings], tiny_clip_env: dict[str, str], gallery_server: GalleryServer
) -> None:
    make_settings(**tiny_clip_env, **gallery_server.env(), MINDSIGHT_DEVICE="cpu")
    result = _search("--image", __file__)
    assert result.exit_code == 1 and "ImageDecodeError" in result.output, result.output
