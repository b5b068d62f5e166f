"""ASGI plumbing shared by the services' request guards: one JSON error shape for every refusal.

Every error a servetune service sends has the body `{"error": str, "detail": [ErrorDetail]}`
where each ErrorDetail is `{"loc": [str | int], "msg": str, "type": str}` (pydantic's own error
items, which BentoML sends for a 400, have exactly these keys plus `url`). The OpenAPI document
declares this shape (services/openapi.py), so generated clients can parse every error.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
Loc = Sequence[str | int]


def error_body(error: str, loc: Loc, msg: str, kind: str) -> dict[str, Any]:
    """The JSON error document: a summary and one detail item naming the offending field."""
    return {"error": error, "detail": [{"loc": list(loc), "msg": msg, "type": kind}]}


async def send_json(
    send: Send, status: int, document: Any, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Send a complete JSON response."""
    body = json.dumps(document).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send,
    status: int,
    error: str,
    *,
    loc: Loc,
    msg: str,
    kind: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Refuse a request with `status` and the project's JSON error body."""
    await send_json(send, status, error_body(error, loc, msg, kind), headers)


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of request header `name` (lower case), or None."""
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value)
    return None
