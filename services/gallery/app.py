"""create_app: the reference gallery, wiring store, tokens, routes, error mapping and dev fault injection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.gallery import dev_routes, internal_routes, user_routes
from services.gallery.auth import Tokens
from services.gallery.errors import BadUpload, DimensionMismatch, PhotoNotFound, ZeroVector
from services.gallery.faults import CallbackLog, FaultInjector, InternalCallbackMiddleware
from services.gallery.store import GalleryStore

ERROR_STATUS: dict[type[Exception], int] = {
    PhotoNotFound: 404,
    DimensionMismatch: 400,
    ZeroVector: 400,
    BadUpload: 400,
}
"""Store-level errors and the status each becomes; every error body is {"error": message}."""


def create_app(root: Path, internal_token: str, access_tokens: Mapping[str, int], dev: bool) -> FastAPI:
    """The gallery over data in `root` (SQLite + uploads/original); `dev` adds /_dev fault injection."""
    store = GalleryStore(Path(root))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(title="mindsight reference gallery", lifespan=lifespan, docs_url="/docs" if dev else None)
    app.state.store = store
    app.state.tokens = Tokens(internal_token, access_tokens)
    app.state.faults = FaultInjector()
    app.state.callback_log = CallbackLog()
    app.include_router(internal_routes.router)
    app.include_router(user_routes.router)
    if dev:
        app.include_router(dev_routes.router)
        app.add_middleware(InternalCallbackMiddleware, faults=app.state.faults, log=app.state.callback_log)
    _install_error_handlers(app)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """Liveness plus a trivial database round trip."""
        store.db.connection().execute("SELECT 1").fetchone()
        return {"status": "ok"}

    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def http_error(_req: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    async def validation_error(_req: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "invalid request: " + "; ".join(parts)}, status_code=422)

    def store_error(status: int) -> Any:
        async def handler(_req: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"error": str(exc)}, status_code=status)

        return handler

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    for exc_type, status in ERROR_STATUS.items():
        app.add_exception_handler(exc_type, store_error(status))
