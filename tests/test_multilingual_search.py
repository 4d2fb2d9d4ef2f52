"""Chinese text through the search CLI and the embedding API, with a mixed English + Chinese-CLIP config."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image
from skimage import data

from mindsight.cli.main import cli
from services.embed_api.app import create_app
from services.gallery.server import BackgroundServer
from shared.gallery_client import GalleryClient
from shared.gallery_contract import MlResultIn
from shared.models.clip.registry import ClipModel
from shared.settings import EmbedApiSettings, Settings
from tests.fixtures.gallery import GalleryServer

CAPTIONS = {
    "astronaut": "一位宇航员站在美国国旗前",
    "chelsea": "一只猫趴在地上",
    "coffee": "桌上有一杯咖啡",
    "rocket": "海边的日落",
}
"""Photo descriptions in the style of the gallery's annotation set."""


@pytest.fixture
def captioned(
    gallery_server: GalleryServer,
    make_settings: Callable[..., Settings],
    mixed_clip_env: dict[str, str],
    mixed_clip_models: dict[str, ClipModel],
    tmp_path: Path,
) -> dict[str, int]:
    """Four photos, each with image embeddings from both models and its caption's `cn` text embedding."""
    settings = make_settings(**mixed_clip_env, **gallery_server.env(), MINDSIGHT_DEVICE="cpu")
    client = GalleryClient(settings.gallery)
    ids: dict[str, int] = {}
    for name, caption in CAPTIONS.items():
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(getattr(data, name)()).convert("RGB").save(path, quality=90)
        ids[name], _ = gallery_server.add_photo(path)
        for label, model in mixed_clip_models.items():
            vector = model.image.predict([Image.open(path)])[0].tolist()
            image = MlResultIn(model=label, modality="image", embedding=vector, processing_status="done")
            client.post_ml_result(ids[name], image)
        text_vector = mixed_clip_models["cn"].text.predict([caption])[0].tolist()
        body = MlResultIn(
            model="cn", modality="caption", embedding=text_vector, caption=caption, processing_status="done"
        )
        client.post_ml_result(ids[name], body)
    client.close()
    return ids


def _search(*args: str) -> Result:
    return CliRunner().invoke(cli, ["--env-file", "/dev/null", "search", *args])


def test_chinese_query_finds_the_photo_with_that_caption_first(captioned: dict[str, int]) -> None:
    result = _search("--model", "cn", "--modality", "caption", "海边的日落", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["model"], out["modality"]) == ("cn", "caption")
    assert out["items"][0]["photo_id"] == captioned["rocket"]
    assert out["items"][0]["distance"] == pytest.approx(0.0, abs=1e-5)
    assert len(out["items"]) == len(CAPTIONS)


def test_chinese_query_table_and_image_search_with_the_chinese_model(captioned: dict[str, int]) -> None:
    table = _search("--model", "cn", "一只猫")
    assert table.exit_code == 0, table.output
    assert "一只猫" in table.stdout and "cn" in table.stdout
    for photo_id in captioned.values():
        assert f" {photo_id} " in table.stdout


def test_undecodable_query_is_a_usage_error() -> None:
    result = _search("--model", "cn", "\udce4\udcb8")  # what Python makes of invalid UTF-8 in argv
    assert result.exit_code == 2 and "not valid Unicode" in result.output


@pytest.fixture(scope="module")
def embed_api(mixed_clip_models: dict[str, ClipModel]) -> Iterator[httpx.Client]:
    """The embedding API over the mixed models, served by uvicorn on a free port."""
    settings = EmbedApiSettings(_env_file=None)  # type: ignore[call-arg]
    server = BackgroundServer(create_app(mixed_clip_models, "clip14", settings)).start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
    server.stop()


def test_embed_api_chinese_text_matches_the_model(
    embed_api: httpx.Client, mixed_clip_models: dict[str, ClipModel]
) -> None:
    queries = ["一只猫", "海边的日落", "体育场内举办一场大型活动", "a cat 在海边"]
    direct = np.stack(mixed_clip_models["cn"].text.predict(queries))
    one = embed_api.post("/embed_text", json={"text": queries[0], "model": "cn"})
    assert one.status_code == 200, one.text
    assert one.json()["model"] == "cn"
    np.testing.assert_allclose(one.json()["embedding"], direct[0], atol=1e-5)
    many = embed_api.post("/embed_texts", json={"texts": queries, "model": "cn"})
    assert many.status_code == 200, many.text
    np.testing.assert_allclose(many.json()["embeddings"], direct, atol=1e-5)
    english = embed_api.post("/embed_text", json={"text": queries[0]}).json()  # the default: clip14
    assert english["model"] == "clip14" and not np.allclose(english["embedding"], direct[0], atol=1e-3)


def test_embed_api_long_chinese_text_is_truncated_and_logged(
    embed_api: httpx.Client, mixed_clip_models: dict[str, ClipModel], caplog: pytest.LogCaptureFixture
) -> None:
    text = "体育场内举办一场大型活动，" * 30  # 390 characters: under the 2000-character cap, over 77 tokens
    with caplog.at_level(logging.INFO, logger="shared.models.clip.backbone"):
        resp = embed_api.post("/embed_text", json={"text": text, "model": "cn"})
    assert resp.status_code == 200, resp.text
    assert any("text truncated to the 77-token context" in r.getMessage() for r in caplog.records)
    cut = mixed_clip_models["cn"].text.predict([text[:75]])[0]  # 75 characters + [CLS] + [SEP] = 77 tokens
    np.testing.assert_allclose(resp.json()["embedding"], cut, atol=1e-5)
