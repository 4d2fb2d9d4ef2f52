"""Routes of the embedding API: /embed_text, /embed_texts, /healthz, /readyz, /models, /metrics.

Embedding endpoints are plain `def`: FastAPI runs them in its threadpool, so CPU-bound inference never
blocks the event loop. Everything else is cheap and answers on the loop.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from mindsight import __version__
from services.embed_api.body_limit import BodyLimitMiddleware
from services.embed_api.http_errors import error_response, install_error_handlers
from services.embed_api.metrics import EmbedApiMetrics, RequestMetricsMiddleware
from services.embed_api.schemas import (
    EmbedTextIn,
    EmbedTextOut,
    EmbedTextsIn,
    EmbedTextsOut,
    ErrorOut,
    ModelOut,
)
from services.embed_api.text_embedding import TextEmbeddingService
from shared.errors import ConfigError
from shared.metrics import record_models
from shared.models.clip.registry import ClipModel
from shared.settings import PLACEHOLDER_TOKENS, EmbedApiSettings

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Answered without a token: probes and Prometheus scrapes carry no credentials, and none of these
reveal embeddings or accept input."""

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorOut} for code in (400, 401, 413, 415, 422, 503)
}


def create_app(models: Mapping[str, ClipModel], default_label: str, settings: EmbedApiSettings) -> FastAPI:
    """The ASGI app serving `models` (already built; loaded and warmed up at start-up if not yet)."""
    token = api_token(settings)
    metrics = EmbedApiMetrics()
    service = TextEmbeddingService(
        models,
        default_label,
        max_text_chars=settings.max_text_chars,
        max_batch=settings.max_batch,
        observer=metrics,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(service.warm_up)
        facts = {label: vars(m.runtime_info) for label, m in models.items()}
        record_models("text", facts, metrics.model_info)
        yield

    app = FastAPI(title="mindsight embed API", version=__version__, lifespan=lifespan)
    app.state.service = service
    app.state.metrics = metrics
    install_error_handlers(app)
    _add_routes(app, service, metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if token:
        app.add_middleware(TokenAuthMiddleware, token=token)
    # Added last so it is outermost: it also counts the 401s of the token check.
    paths = [getattr(route, "path", "") for route in app.routes]
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics, routes=paths)
    return app


def api_token(settings: EmbedApiSettings) -> str:
    """EMBED_API_TOKEN ("" = no auth); a placeholder copied from an example is refused."""
    token = settings.token.get_secret_value().strip()
    if token and (token.lower() in PLACEHOLDER_TOKENS or token.lower().startswith("change")):
        raise ConfigError("EMBED_API_TOKEN is an example placeholder: set a real secret, or leave it empty")
    return token


def _add_routes(app: FastAPI, service: TextEmbeddingService, metrics: EmbedApiMetrics) -> None:
    @app.post("/embed_text", response_model=EmbedTextOut, responses=_ERRORS)
    def embed_text(body: EmbedTextIn) -> EmbedTextOut:
        """Embed one text with the default model or the one named (label or source)."""
        model, vectors = service.embed([body.text], body.model)
        return EmbedTextOut(embedding=vectors[0].tolist(), model=model.label, dim=model.dim)

    @app.post("/embed_texts", response_model=EmbedTextsOut, responses=_ERRORS)
    def embed_texts(body: EmbedTextsIn) -> EmbedTextsOut:
        """Embed up to EMBED_API_MAX_BATCH texts in one batch; one vector per text, in order."""
        model, vectors = service.embed(body.texts, body.model)
        return EmbedTextsOut(embeddings=[v.tolist() for v in vectors], model=model.label, dim=model.dim)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up (no token needed)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Every model loaded: 200 with what each runs on, else 503."""
        ready = service.ready
        body = {"ready": ready, "default_model": service.default_label, "models": _describe(service)}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/models", response_model=list[ModelOut])
    async def list_models() -> list[ModelOut]:
        """The models on offer; `default` marks the one used when a request names none."""
        return [_model_out(m, service) for m in service.models.values()]

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.render(), media_type=metrics.content_type)


def _describe(service: TextEmbeddingService) -> dict[str, dict[str, object]]:
    return {m.label: _model_out(m, service).model_dump(exclude={"label"}) for m in service.models.values()}


def _model_out(model: ClipModel, service: TextEmbeddingService) -> ModelOut:
    info = model.text.runtime_info  # the tower this service really runs
    return ModelOut(
        label=model.label,
        source=model.source,
        family=str(model.family),
        dim=model.dim,
        default=model.label == service.default_label,
        runtime=info.runtime,
        device=info.device,
        precision=info.precision,
        loaded=model.text.loaded,
        extra={k: v for k, v in info.extra.items() if k not in ("source", "family", "dim")},
    )


class TokenAuthMiddleware:
    """Every request but OPEN_PATHS needs `Authorization: Bearer <token>` or `x-api-token: <token>`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._authorised(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401,
            "missing or wrong API token: send `Authorization: Bearer <EMBED_API_TOKEN>` or `x-api-token`",
            "Unauthorized",
            headers={"www-authenticate": 'Bearer realm="mindsight-embed-api"'},
        )
        await response(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, rest = value.partition(b" ")
                if scheme.lower() == b"bearer" and hmac.compare_digest(rest.strip(), self._token):
                    return True
            elif name == b"x-api-token" and hmac.compare_digest(value.strip(), self._token):
                return True
        return False
