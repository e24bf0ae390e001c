"""Two ASGI middlewares every request and response of the console goes through.

- :class:`BodyLimit`: a request body over the limit is refused with 413 before the
  application acts on it (by its ``Content-Length``, or while it is read when chunked),
  so nothing is written;
- :class:`RedactBodies`: every text or JSON response body has the server's secrets
  masked (the same :class:`~jobctl.redact.Redactor` as the CLI's output), whatever
  produced it: the API, a page, an error message. JSON is redacted value by value
  (a secret in a JSON string may be escaped), text as text.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from jobctl.redact import Redactor

TOO_LARGE = "the request body is larger than {limit} bytes"


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, TOO_LARGE.format(limit=limit))


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_body):
                await _refuse(send, self.max_body)
                return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, watch)
        except BodyTooLarge:
            if started:
                raise
            await _refuse(send, self.max_body)


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps({"detail": TOO_LARGE.format(limit=limit)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RedactBodies:
    def __init__(self, app: ASGIApp, *, redactor: Redactor) -> None:
        self.app = app
        self.redactor = redactor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "HEAD":  # HEAD: no body
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        kind = ""
        chunks: list[bytes] = []

        async def redacting(message: Message) -> None:
            nonlocal start, kind
            if message["type"] == "http.response.start":
                kind = _kind(message.get("headers", ()))
                if not kind:
                    await send(message)
                    return
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = self._redacted(b"".join(chunks), kind)
            headers = [(k, v) for k, v in start.get("headers", ()) if k != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, redacting)

    def _redacted(self, body: bytes, kind: str) -> bytes:
        text = body.decode("utf-8", errors="replace")
        if kind == "json":
            try:
                data: Any = json.loads(text)
            except ValueError:
                return self.redactor.text(text).encode()
            return json.dumps(self.redactor.data(data), ensure_ascii=False).encode()
        return self.redactor.text(text).encode()


def _kind(headers: Any) -> str:
    """``json`` or ``text`` for a body to redact, "" for one to pass as it is."""
    for name, value in headers:
        if name == b"content-type":
            media = value.decode("latin-1").split(";")[0].strip().lower()
            if media == "application/json" or media.endswith("+json"):
                return "json"
            if media.startswith("text/") or media in ("application/javascript",):
                return "text"
            return ""
    return ""
