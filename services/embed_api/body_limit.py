"""Bound the request body before it is read: a 300 MB upload must cost the server nothing but a 413."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.embed_api.http_errors import BodyTooLarge, body_too_large_message, error_response


class BodyLimitMiddleware:
    """413 when Content-Length is over `max_bytes` (nothing read), or as soon as a chunked body passes it.

    The route reads the body through the wrapped `receive`; BodyTooLarge raised there reaches FastAPI's
    exception handlers like any HTTPException, so both cases answer the same JSON error body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.max_bytes:
            message = body_too_large_message(self.max_bytes)
            response = error_response(413, message, "InputTooLarge", headers={"connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


def _declared_length(scope: Scope) -> int:
    """The Content-Length header (the server already refused a malformed one); 0 when absent."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value)
    return 0
