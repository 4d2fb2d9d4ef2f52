"""Start the embedding API: load the CLIP models once, say what they run on, then serve with uvicorn."""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI

from services.embed_api.app import api_token, create_app
from shared.device import resolve_device
from shared.logging_setup import configure_logging
from shared.models.clip.registry import load_clip_models
from shared.models.clip.runtime import clip_needs_torch
from shared.settings import Settings

log = logging.getLogger(__name__)


def build_app(settings: Settings) -> FastAPI:
    """Load every configured CLIP model on the configured device and wrap them in the app."""
    api_token(settings.embed_api)  # refuse a placeholder token before spending time on model loading
    needs_torch = clip_needs_torch(settings.clip, settings.store)
    device = resolve_device(settings.worker.device) if needs_torch else "cpu"
    models = load_clip_models(
        settings.clip,
        settings.store,
        device,
        threads=settings.worker.threads,
        device_pref=settings.worker.device,
        towers=("text",),
    )
    for label, model in models.items():
        info = model.text.runtime_info
        log.info(
            "embed-api model %s: source=%s family=%s runtime=%s device=%s precision=%s dim=%d",
            label, model.source, model.family, info.runtime, info.device, info.precision, model.dim,
        )  # fmt: skip
    return create_app(models, settings.clip.label_for(None), settings.embed_api)


def run(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve until interrupted; `host`/`port` default to EMBED_API_HOST / EMBED_API_PORT."""
    configure_logging(settings.worker.log_level, settings.worker.log_format)
    app = build_app(settings)
    host = host or settings.embed_api.host
    port = port or settings.embed_api.port
    auth = "token required" if api_token(settings.embed_api) else "no token (EMBED_API_TOKEN unset)"
    log.info("embed-api listening on http://%s:%d (%s)", host, port, auth)
    # Per-request access logs would cost more than a short query's inference; /metrics counts requests.
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
