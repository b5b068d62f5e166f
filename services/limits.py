"""Request limits shared by the services: body size cap and JSON-only request bodies.

Both answer with the JSON error body of services/asgi.py naming what was wrong, before BentoML
parses anything: BentoML's own parsing picks a decoder by Content-Type and answered HTTP 500 to
`multipart/form-data` without a boundary, and parsed form bodies it was never meant to take.
"""

from __future__ import annotations

from services.asgi import App, Message, Receive, Scope, Send, header, send_error
from services.wire import JSON_MEDIA_TYPE

MAX_BODY_BYTES = 1_000_000

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyLimitMiddleware:
    """ASGI middleware: answers 413 (JSON) when a request body exceeds `max_bytes`.

    The body is buffered up to the limit and replayed, so chunked uploads without a
    Content-Length are capped too.
    """

    def __init__(self, app: App, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _too_large(send, declared, self.max_bytes)
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
                await _too_large(send, size, self.max_bytes)
                return
            chunks.append(body)
            more = bool(message.get("more_body", False))
        replayed = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([replayed], then=receive), send)


class JsonOnlyMiddleware:
    """ASGI middleware: a POST body must be JSON; any other declared media type gets 415.

    A request without a Content-Type is taken as JSON (as BentoML does), so `/info` can be
    called with no body at all. Media type names are case-insensitive; parameters such as
    `charset` are ignored (the body must be UTF-8 JSON either way).
    """

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            declared = header(scope, b"content-type")
            if declared is not None:
                media_type = media_type_of(declared)
                if media_type != JSON_MEDIA_TYPE:
                    shown = declared.decode("latin-1")[:100]
                    await send_error(
                        send,
                        415,
                        f"unsupported media type {shown!r}: send {JSON_MEDIA_TYPE}",
                        loc=["header", "content-type"],
                        msg=f"Content-Type must be {JSON_MEDIA_TYPE}",
                        kind="unsupported_media_type",
                        headers=[(b"accept-post", JSON_MEDIA_TYPE.encode())],
                    )
                    return
        await self.app(scope, receive, send)


def media_type_of(content_type: bytes) -> str:
    """`Application/JSON; charset=utf-8` -> `application/json`."""
    return content_type.decode("latin-1").split(";", 1)[0].strip().lower()


def _content_length(scope: Scope) -> int | None:
    value = header(scope, b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


async def _too_large(send: Send, size: int, limit: int) -> None:
    await send_error(
        send,
        413,
        f"request body too large: {size} bytes > limit {limit} bytes",
        loc=["body"],
        msg=f"the request body may have at most {limit} bytes",
        kind="body_too_large",
    )
