"""The one place errors become HTTP statuses; every error body is `{"error": ..., "error_type": ...}`."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from services.embed_api.text_embedding import InputTooLarge
from shared.errors import BadPayload, MindsightError, PermanentError, TransientError, UnknownModel

log = logging.getLogger(__name__)

STATUS_BY_ERROR: tuple[tuple[type[MindsightError], int], ...] = (
    (InputTooLarge, 413),
    (UnknownModel, 400),
    (BadPayload, 422),
    (PermanentError, 422),
    (TransientError, 503),
    (MindsightError, 500),
)
"""First match wins, so subclasses come before their bases. 4xx: the request must change; 503: retry."""


class BodyTooLarge(HTTPException):
    """The request body is over EMBED_API_MAX_BODY_BYTES (raised while it is read, before it is parsed)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, body_too_large_message(limit), headers={"connection": "close"})


def body_too_large_message(limit: int) -> str:
    return f"request body over {limit} bytes (EMBED_API_MAX_BODY_BYTES)"


def status_for(exc: MindsightError) -> int:
    """The HTTP status for one of our errors."""
    return next(status for kind, status in STATUS_BY_ERROR if isinstance(exc, kind))


def error_response(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON error body every failure answers with; it always encodes (a lone surrogate is escaped)."""
    safe = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": safe, "error_type": kind}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route our errors, FastAPI's validation errors and Starlette's HTTP errors to `error_response`."""

    async def on_mindsight(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, MindsightError)
        status = status_for(exc)
        if status >= 500:
            log.error("embedding failed: %s: %s", type(exc).__name__, exc)
        return error_response(status, str(exc), type(exc).__name__)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, f"malformed JSON body: {_json_problem(errors)}", "MalformedJSON")
        ctype = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in ctype:
            got = ctype or "no content type"
            message = f"send a JSON body with Content-Type: application/json (got {got})"
            return error_response(415 if ctype else 422, message, "BadPayload")
        problems = "; ".join(_describe(e) for e in errors)
        return error_response(422, f"invalid request: {problems}", "BadPayload")

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers) if exc.headers else None
        if isinstance(exc, BodyTooLarge):
            return error_response(413, str(exc.detail), "InputTooLarge", headers)
        if (problem := _unparsable_body(exc)) is not None:
            return error_response(400, f"malformed JSON body: {problem}", "MalformedJSON")
        return error_response(exc.status_code, str(exc.detail), "HTTPError", headers)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in the embedding API")
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}", "InternalError")

    app.add_exception_handler(MindsightError, on_mindsight)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def _unparsable_body(exc: HTTPException) -> str | None:
    """What FastAPI's bare "error parsing the body" 400 was about, when its cause is one we can name."""
    cause = exc.__cause__
    if isinstance(cause, RecursionError):
        return "nested too deeply"
    if isinstance(cause, UnicodeDecodeError):
        return f"not UTF-8 ({cause.reason} at byte {cause.start})"
    return None


def _describe(error: dict[str, Any]) -> str:
    """`body.text: Field required` from one pydantic error."""
    loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
    return f"{loc}: {error.get('msg', 'invalid')}"


def _json_problem(errors: Sequence[Any]) -> str:
    for e in errors:
        if e.get("type") == "json_invalid":
            ctx = e.get("ctx") or {}
            return str(ctx.get("error") or e.get("msg") or "cannot parse")
    return json.dumps(errors, default=str)[:200]
