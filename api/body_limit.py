"""Request-size limits, applied before a route reads the body.

A pure ASGI middleware (no buffering of its own): a request whose ``Content-Length`` is over
its route's limit is answered 413 at once, its body never read; a chunked body is counted as it
streams, and the read that passes the limit ends the request with 413. The limits come from
``dealflow.limits``: small for JSON and the provider webhooks, larger for inbound mail, 25 MB
for the wet-signed PDF.

It also answers 400 for a path or query string carrying a NUL character: no route can use it,
and PostgreSQL refuses it wherever it would be looked up.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body
from dealflow import limits

# (method, path pattern, limit): the first match wins; anything else gets MAX_JSON_BODY.
ROUTE_LIMITS: tuple[tuple[str, re.Pattern[str], int], ...] = (
    ("POST", re.compile(r"/v1/webhooks/email/inbound/?"), limits.MAX_INBOUND_MAIL_BODY),
    ("POST", re.compile(r"/v1/deals/[^/]+/signature/offline/?"), limits.MAX_UPLOAD_BODY),
    ("POST", re.compile(r"/v1/campaigns/?"), limits.MAX_CAMPAIGN_BODY),
)


def body_limit_for(method: str, path: str) -> int:
    """The most bytes a request to ``method path`` may send."""
    for route_method, pattern, limit in ROUTE_LIMITS:
        if method == route_method and pattern.fullmatch(path):
            return limit
    return limits.MAX_JSON_BODY


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its limit.

    An ``HTTPException`` (FastAPI's), so FastAPI's body parsing lets it through unchanged and
    the error handlers answer it with the error body and 413.
    """

    def __init__(self, limit: int) -> None:
        # The client may still be sending: this connection will not read the rest.
        super().__init__(413, detail=_too_large_message(limit), headers={"Connection": "close"})
        self.limit = limit


def _too_large_message(limit: int) -> str:
    return f"The request body is larger than this endpoint accepts ({limit:,} bytes)."


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await _answer(send, 400, "bad_request", "The URL contains a NUL character.")
            return
        limit = body_limit_for(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared == -1:
            await _answer(send, 400, "bad_request", "Content-Length is not a number of bytes.")
            return
        if declared is not None and declared > limit:
            await _answer(send, 413, "payload_too_large", _too_large_message(limit))
            return

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            # Read outside FastAPI's handlers (or re-raised by them): answer here if we still can.
            if started:
                raise
            await _answer(send, 413, "payload_too_large", _too_large_message(limit))


def _content_length(scope: Scope) -> int | None:
    """The declared length; None when absent (chunked), -1 when it is not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            # At most 18 digits: int() of an arbitrary header is not free, and no limit is near.
            if not text.isascii() or not text.isdigit() or len(text) > 18:
                return -1
            return int(text)
    return None


async def _answer(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message)).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 413:
        # The client may still be sending: tell it this connection will not read the rest.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
