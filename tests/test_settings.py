"""Settings keep the backend's env names and refuse configurations that cannot work."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.errors import ConfigError
from shared.settings import Settings


def test_defaults_match_the_backend(make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    assert (s.redis.photo_queue, s.redis.photo_dlq) == ("photo_tasks", "photo_tasks_dlq")
    assert (s.redis.text_queue, s.redis.text_dlq) == ("text_tasks", "text_tasks_dlq")
    assert s.clip.embedding_dim == 768 and s.caption.enabled and s.caption.max_length == 64
    assert s.face.model_name == "buffalo_l" and s.face.embedding_dim == 512


def test_clip_models_parsing(make_settings: Callable[..., Settings]) -> None:
    s = make_settings(CLIP_MODELS="clip14=openai/clip-vit-large-patch14, laion=hf-hub:laion/x")
    assert [(m.label, m.source) for m in s.clip.specs()] == [
        ("clip14", "openai/clip-vit-large-patch14"),
        ("laion", "hf-hub:laion/x"),
    ]
    assert s.clip.label_for(None) == "clip14"


def test_empty_clip_models_falls_back_to_default_model(make_settings: Callable[..., Settings]) -> None:
    s = make_settings(CLIP_MODELS="", CLIP_MODEL_NAME="repo/x", PROCESSING_DEFAULT_MODEL="lbl")
    assert [(m.label, m.source) for m in s.clip.specs()] == [("lbl", "repo/x")]


@pytest.mark.parametrize("raw", ["a=x,a=y", "=x", "a=", ","])
def test_bad_clip_models_are_config_errors(make_settings: Callable[..., Settings], raw: str) -> None:
    with pytest.raises(ConfigError):
        make_settings(CLIP_MODELS=raw).clip.specs()


def test_per_label_dimension(make_settings: Callable[..., Settings]) -> None:
    s = make_settings(CLIP_MODEL_DIMS="laion=1024", PROCESSING_EMBEDDING_DIM="768")
    assert s.clip.expected_dim("laion") == 1024 and s.clip.expected_dim("clip14") == 768


@pytest.mark.parametrize("token", ["", "changeme", "change-me-please", "与服务端一致的 token"])
def test_placeholder_token_is_refused(make_settings: Callable[..., Settings], token: str) -> None:
    with pytest.raises(ConfigError, match="PROCESSING_INTERNAL_TOKEN"):
        make_settings(PROCESSING_INTERNAL_TOKEN=token).gallery.require_internal_token()


def test_invalid_values_are_config_errors(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="MINDSIGHT_BATCH_SIZE"):
        make_settings(MINDSIGHT_BATCH_SIZE="0")
    with pytest.raises(ConfigError, match="MINDSIGHT_RETRY_BACKOFF_S"):
        make_settings(MINDSIGHT_BATCH_SIZE=None, MINDSIGHT_RETRY_BACKOFF_S="5,soon").worker.backoff()
