"""The embedding API over real HTTP (uvicorn on a thread) with the tiny CLIP models of both families."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import SecretStr
from skimage import data

from services.embed_api.app import create_app
from services.embed_api.server import build_app
from services.gallery.server import BackgroundServer
from shared.errors import ConfigError
from shared.models.clip.registry import ClipFamily, ClipModel
from shared.models.clip.transformers_backend import transformers_clip_embedders
from shared.settings import EmbedApiSettings, Settings

MAX_CHARS = 200
MAX_BATCH = 4
TOKEN = "s3cret-embed-token-for-tests"


def _api_settings(token: str = "", **more: Any) -> EmbedApiSettings:
    return EmbedApiSettings(  # type: ignore[call-arg]
        token=SecretStr(token), max_text_chars=MAX_CHARS, max_batch=MAX_BATCH, _env_file=None, **more
    )


@pytest.fixture(scope="module")
def api(tiny_clip_models: dict[str, ClipModel]) -> Iterator[httpx.Client]:
    """The app over the tiny models, served by uvicorn on a free port; a client bound to it."""
    server = BackgroundServer(create_app(tiny_clip_models, "tiny-hf", _api_settings())).start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
    server.stop()


def _direct(model: ClipModel, texts: list[str]) -> np.ndarray:
    return np.stack(model.text.predict(texts))


def test_default_model_needs_only_the_text(api: httpx.Client, tiny_clip_models: dict[str, ClipModel]) -> None:
    resp = api.post("/embed_text", json={"text": "a cat on the beach"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["model"], body["dim"], len(body["embedding"])) == ("tiny-hf", 32, 32)
    vector = np.asarray(body["embedding"], dtype=np.float32)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    np.testing.assert_allclose(
        vector, _direct(tiny_clip_models["tiny-hf"], ["a cat on the beach"])[0], atol=1e-6
    )


@pytest.mark.parametrize("label", ["tiny-hf", "tiny-oc"])
def test_model_by_label_and_by_source_give_the_same_vector(
    api: httpx.Client, tiny_clip_models: dict[str, ClipModel], label: str
) -> None:
    model = tiny_clip_models[label]
    by_label = api.post("/embed_text", json={"text": "two dogs in the snow", "model": label}).json()
    by_source = api.post("/embed_text", json={"text": "two dogs in the snow", "model": model.source}).json()
    assert by_label["model"] == by_source["model"] == label
    assert by_label["embedding"] == by_source["embedding"]
    np.testing.assert_allclose(by_label["embedding"], _direct(model, ["two dogs in the snow"])[0], atol=1e-6)


def test_the_two_models_give_different_vectors(api: httpx.Client) -> None:
    hf = api.post("/embed_text", json={"text": "a red car", "model": "tiny-hf"}).json()["embedding"]
    oc = api.post("/embed_text", json={"text": "a red car", "model": "tiny-oc"}).json()["embedding"]
    assert not np.allclose(hf, oc, atol=1e-3)


@pytest.mark.parametrize("label", ["tiny-hf", "tiny-oc"])
def test_batch_equals_single_calls(api: httpx.Client, label: str) -> None:
    texts = ["a cat", "a very long description of a sunny beach with palm trees and people", "snow"]
    resp = api.post("/embed_texts", json={"texts": texts, "model": label})
    assert resp.status_code == 200, resp.text
    batch = resp.json()
    assert batch["model"] == label and batch["dim"] == 32 and len(batch["embeddings"]) == len(texts)
    singles = [api.post("/embed_text", json={"text": t, "model": label}).json()["embedding"] for t in texts]
    np.testing.assert_allclose(batch["embeddings"], singles, atol=1e-5)


def test_text_vectors_live_in_the_image_vectors_space(
    api: httpx.Client, tiny_clip_models: dict[str, ClipModel]
) -> None:
    photo = Image.fromarray(data.chelsea())
    for label, model in tiny_clip_models.items():
        text = api.post("/embed_text", json={"text": "a cat", "model": label}).json()
        image_vector = model.image.predict([photo])[0]
        assert image_vector.shape == (text["dim"],) == (len(text["embedding"]),)


@pytest.mark.parametrize(
    ("path", "content", "status", "error_type", "needle"),
    [
        ("/embed_text", {"text": ""}, 422, "BadPayload", "empty"),
        ("/embed_text", {"text": "   \n\t"}, 422, "BadPayload", "whitespace"),
        ("/embed_text", {"text": "x" * (MAX_CHARS + 1)}, 413, "InputTooLarge", "EMBED_API_MAX_TEXT_CHARS"),
        ("/embed_text", {"text": "a cat", "model": "ViT-H-14"}, 400, "UnknownModel", "tiny-hf, tiny-oc"),
        ("/embed_text", {"model": "tiny-hf"}, 422, "BadPayload", "text: Field required"),
        ("/embed_text", {"text": 5}, 422, "BadPayload", "text"),
        ("/embed_text", '{"text": "a cat"', 400, "MalformedJSON", "malformed JSON"),
        ("/embed_text", "[1, 2]", 422, "BadPayload", "invalid request"),
        ("/embed_texts", {"texts": ["a"] * (MAX_BATCH + 1)}, 413, "InputTooLarge", "EMBED_API_MAX_BATCH"),
        ("/embed_texts", {"texts": []}, 422, "BadPayload", "at least one"),
        ("/embed_texts", {"texts": ["ok", " "]}, 422, "BadPayload", "texts[1]"),
        ("/embed_texts", {"texts": "a cat"}, 422, "BadPayload", "texts"),
    ],
)
def test_bad_requests_get_a_clear_4xx(
    api: httpx.Client, path: str, content: Any, status: int, error_type: str, needle: str
) -> None:
    if isinstance(content, str):
        resp = api.post(path, content=content, headers={"content-type": "application/json"})
    else:
        resp = api.post(path, json=content)
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error_type"] == error_type and needle in body["error"], body


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/embed_text", b'{"text": "a \\ud800 cat"}', 422, "text: not valid Unicode"),
        ("/embed_texts", b'{"texts": ["ok", "\\udfff"]}', 422, "texts.1: not valid Unicode"),
        ("/embed_text", b'{"text": "a cat", "model": "\\ud800"}', 422, "model: not valid Unicode"),
        ("/embed_text", b'{"text": "\xff\xfe cat"}', 400, "UTF-8"),
        ("/embed_text", b"[" * 100_000 + b"]" * 100_000, 400, "nested"),
        ("/embed_text", b'{"a":' * 1000 + b"1" + b"}" * 1000, 400, "nested"),
    ],
)
def test_hostile_bodies_get_a_4xx_and_keep_the_connection(
    api: httpx.Client, path: str, body: bytes, status: int, needle: str
) -> None:
    """A lone surrogate once crashed the tokenizer: a 500, and the keep-alive connection was reset."""
    conn = http.client.HTTPConnection(api.base_url.host, api.base_url.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"content-type": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        assert resp.status == status and needle in answer["error"], answer
        assert conn.sock is not None
        local = conn.sock.getsockname()
        conn.request(
            "POST", "/embed_text", body=b'{"text": "a cat"}', headers={"content-type": "application/json"}
        )
        follow_up = conn.getresponse()
        assert follow_up.status == 200 and len(json.loads(follow_up.read())["embedding"]) == 32
        assert conn.sock is not None and conn.sock.getsockname() == local  # the same connection
    finally:
        conn.close()


LIMIT = 4096


@pytest.fixture(scope="module")
def limited(tiny_clip_models: dict[str, ClipModel]) -> Iterator[BackgroundServer]:
    """The app with EMBED_API_MAX_BODY_BYTES=LIMIT."""
    app = create_app(tiny_clip_models, "tiny-hf", _api_settings(max_body_bytes=LIMIT))
    server = BackgroundServer(app).start()
    yield server
    server.stop()


def _exchange(server: BackgroundServer, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send `request` (a head, maybe part of a body) on a raw socket and read the answer, body unfinished."""
    with socket.create_connection((server.host, server.port), timeout=20) as sock:
        sock.sendall(request)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, json.loads(resp.read())


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(limited: BackgroundServer) -> None:
    head = b"POST /embed_text HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    status, body = _exchange(limited, head + b"content-length: 300000000\r\n\r\n")  # no byte of it sent
    assert status == 413 and body["error_type"] == "InputTooLarge", body
    assert "EMBED_API_MAX_BODY_BYTES" in body["error"] and str(LIMIT) in body["error"]


def test_a_chunked_body_is_cut_off_at_the_limit(limited: BackgroundServer) -> None:
    head = b"POST /embed_texts HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    chunk = b'"' + b"x" * 1000 + b'",'
    sent = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in [b'{"texts": [', *[chunk] * 5])
    # LIMIT + ~1 KB sent, the body never finished: only a limit enforced while reading can answer.
    status, body = _exchange(limited, head + b"transfer-encoding: chunked\r\n\r\n" + sent)
    assert status == 413 and body["error_type"] == "InputTooLarge", body


def test_a_body_within_the_limit_is_served(limited: BackgroundServer) -> None:
    texts = ["a cat"] * MAX_BATCH
    with httpx.Client(base_url=limited.url, timeout=30) as client:
        assert client.post("/embed_texts", json={"texts": texts}).status_code == 200
        chunked = client.post(  # a generator body goes out chunked, without content-length
            "/embed_texts", content=iter([b'{"texts": ', json.dumps(texts).encode(), b"}"]),
            headers={"content-type": "application/json"},
        )  # fmt: skip
        assert chunked.status_code == 200, chunked.text
    assert EmbedApiSettings(_env_file=None).max_body_bytes == 1024 * 1024  # type: ignore[call-arg]


def test_a_form_body_is_told_to_send_json(api: httpx.Client) -> None:
    resp = api.post(
        "/embed_text", content=b"text=a+cat", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert resp.status_code == 415 and "application/json" in resp.json()["error"]


def test_unknown_route_and_method_are_json_errors(api: httpx.Client) -> None:
    assert api.get("/nope").status_code == 404 and "error" in api.get("/nope").json()
    resp = api.get("/embed_text")
    assert resp.status_code == 405 and resp.json()["error_type"] == "HTTPError"


def test_concurrent_requests_each_get_their_own_vector(
    api: httpx.Client, tiny_clip_models: dict[str, ClipModel]
) -> None:
    texts = [f"photo number {i}" for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(lambda t: api.post("/embed_text", json={"text": t}).json()["embedding"], texts)
        )
    np.testing.assert_allclose(answers, _direct(tiny_clip_models["tiny-hf"], texts), atol=1e-5)


def test_readyz_and_models_describe_what_runs(
    api: httpx.Client, tiny_clip_models: dict[str, ClipModel]
) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    resp = api.get("/readyz")
    assert resp.status_code == 200
    ready = resp.json()
    assert ready["ready"] is True and ready["default_model"] == "tiny-hf"
    assert set(ready["models"]) == {"tiny-hf", "tiny-oc"}
    for label, info in ready["models"].items():
        model = tiny_clip_models[label]
        assert info["source"] == model.source and info["dim"] == 32 and info["loaded"] is True
        assert (info["runtime"], info["device"]) == ("torch", "cpu")
        assert info["family"] == str(model.family)
    assert {ready["models"]["tiny-hf"]["family"], ready["models"]["tiny-oc"]["family"]} == {
        ClipFamily.TRANSFORMERS,
        ClipFamily.OPEN_CLIP,
    }
    listed = api.get("/models").json()
    assert [(m["label"], m["default"]) for m in listed] == [("tiny-hf", True), ("tiny-oc", False)]


def test_metrics_count_requests_statuses_and_texts(api: httpx.Client) -> None:
    def value(text: str, name: str, **labels: str) -> float:
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        match = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    before = api.get("/metrics").text
    api.post("/embed_text", json={"text": "metrics one"})
    api.post("/embed_texts", json={"texts": ["a", "b", "c"], "model": "tiny-oc"})
    api.post("/embed_text", json={"text": ""})
    api.get("/wp-login.php")
    after = api.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    ok = {"method": "POST", "route": "/embed_text", "status": "200"}
    bad = {"method": "POST", "route": "/embed_text", "status": "422"}
    other = {"method": "GET", "route": "other", "status": "404"}
    for labels in (ok, bad, other):
        assert (
            value(text, "mindsight_embed_api_requests_total", **labels)
            == value(before, "mindsight_embed_api_requests_total", **labels) + 1
        )
    texts = "mindsight_embed_api_texts_embedded_total"
    assert value(text, texts, model="tiny-oc") == value(before, texts, model="tiny-oc") + 3
    assert value(text, texts, model="tiny-hf") == value(before, texts, model="tiny-hf") + 1
    count = "mindsight_embed_api_request_duration_seconds_count"
    assert value(text, count, route="/embed_texts") >= 1
    assert 'mindsight_embed_api_request_duration_seconds_bucket{le="0.015",route="/embed_text"}' in text
    assert "mindsight_embed_api_inference_seconds_count" in text and "process_cpu_seconds_total" in text


def test_token_is_required_everywhere_but_the_probes(tiny_clip_models: dict[str, ClipModel]) -> None:
    server = BackgroundServer(create_app(tiny_clip_models, "tiny-hf", _api_settings(TOKEN))).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            # Kubernetes probes and Prometheus scrapes carry no credentials.
            for probe in ("/healthz", "/readyz", "/metrics"):
                assert client.get(probe).status_code == 200, probe
            for method, path in [
                ("POST", "/embed_text"),
                ("POST", "/embed_texts"),
                ("GET", "/models"),
                ("GET", "/docs"),
            ]:
                resp = client.request(method, path, json={"text": "a cat"})
                assert resp.status_code == 401, (path, resp.text)
                assert (
                    resp.json()["error_type"] == "Unauthorized"
                    and "Bearer" in resp.headers["www-authenticate"]
                )
            wrong = client.post("/embed_text", json={"text": "a"}, headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401
            basic = client.post(
                "/embed_text", json={"text": "a"}, headers={"authorization": f"Basic {TOKEN}"}
            )
            assert basic.status_code == 401
            for headers in ({"authorization": f"Bearer {TOKEN}"}, {"x-api-token": TOKEN}):
                resp = client.post("/embed_text", json={"text": "a cat"}, headers=headers)
                assert resp.status_code == 200 and resp.json()["dim"] == 32
            metrics = client.get("/metrics", headers={"x-api-token": TOKEN}).text
            assert 'route="/embed_text",status="401"' in metrics
    finally:
        server.stop()


def test_placeholder_token_and_unknown_default_are_refused(tiny_clip_models: dict[str, ClipModel]) -> None:
    with pytest.raises(ConfigError, match="EMBED_API_TOKEN"):
        create_app(tiny_clip_models, "tiny-hf", _api_settings("changeme"))
    with pytest.raises(ConfigError, match="tiny-hf, tiny-oc"):
        create_app(tiny_clip_models, "clip-ViT-L-14", _api_settings())


def test_models_are_loaded_and_warmed_at_start_up(tiny_transformers_clip_dir: Path) -> None:
    image, text = transformers_clip_embedders(str(tiny_transformers_clip_dir), "cpu", local_files_only=True)
    model = ClipModel("cold", str(tiny_transformers_clip_dir), ClipFamily.TRANSFORMERS, image, text, dim=32)
    app = create_app({"cold": model}, "cold", _api_settings())
    assert TestClient(app).get("/readyz").status_code == 503  # no lifespan run: nothing loaded yet
    with TestClient(app) as client:  # runs the lifespan: load + warm-up
        ready = client.get("/readyz").json()
        assert ready["ready"] is True and ready["models"]["cold"]["loaded"] is True
        assert client.post("/embed_text", json={"text": "a cat"}).json()["dim"] == 32


def test_build_app_loads_the_configured_models(
    make_settings: Callable[..., Settings], tiny_clip_env: dict[str, str]
) -> None:
    settings = make_settings(**tiny_clip_env, MINDSIGHT_DEVICE="cpu", EMBED_API_TOKEN="")
    with TestClient(build_app(settings)) as client:
        body = client.post("/embed_text", json={"text": "a cat on the beach"}).json()
        assert body["model"] == settings.clip.label_for(None) == "tiny-hf"
        assert sorted(m["label"] for m in client.get("/models").json()) == ["tiny-hf", "tiny-oc"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow  # a fresh interpreter importing torch, open_clip and transformers: ~15 s on 2 busy cores
def test_cli_serves_the_curl_example(tiny_clip_env: dict[str, str], tmp_path: Path) -> None:
    """`mindsight serve embed-api` as operators start it; the README's curl call must just work."""
    port = _free_port()
    env = {
        **os.environ,
        **tiny_clip_env,
        "MINDSIGHT_DEVICE": "cpu",
        "EMBED_API_TOKEN": "",
        "EMBED_API_HOST": "127.0.0.1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "mindsight", "serve", "embed-api", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "embed-api did not become ready"
            time.sleep(0.2)
        resp = httpx.post(f"{url}/embed_text", json={"text": "a cat on the beach"}, timeout=10)
        assert resp.status_code == 200 and resp.json()["model"] == "tiny-hf" and resp.json()["dim"] == 32
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            output = proc.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0]
    assert "embed-api model tiny-oc" in output and "device=cpu" in output, output
