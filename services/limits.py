"""Request limits shared by the services: body size cap and JSON errors for client mistakes."""

from __future__ import annotations

import json
from typing import Any

MAX_BODY_BYTES = 1_000_000

Scope = dict[str, Any]
Message = dict[str, Any]


class BodyLimitMiddleware:
    """ASGI middleware: answers 413 (JSON) when a request body exceeds `max_bytes`.

    The body is buffered up to the limit and replayed, so chunked uploads without a
    Content-Length are capped too.
    """

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") not in {"POST", "PUT", "PATCH"}:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _reject(send, declared, self.max_bytes)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await _reject(send, size, self.max_bytes)
                return
            chunks.append(body)
            more = bool(message.get("more_body", False))
        replayed = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([replayed], then=receive), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(messages: list[Message], then: Any = None) -> Any:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


async def _reject(send: Any, size: int, limit: int) -> None:
    body = json.dumps({"error": f"request body too large: {size} bytes > limit {limit} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
