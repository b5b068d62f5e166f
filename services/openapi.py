"""The services' OpenAPI document (`/docs.json`) made to say what the services really return.

BentoML declares every error as `{"error": str, "detail": str}` and only 400/404/500, while the
400 it sends carries pydantic's list of error items, and the guards in front of the service add
401, 413 and 415; batching adds 503 (shed) and the traffic timeout 504. BentoML also declares
every request body optional, though a missing body is answered 400 where fields are required.
`patch_openapi` rewrites BentoML's document accordingly; `OpenApiMiddleware` applies it to the
`/docs.json` response (the only place the document is served).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from services.asgi import App, Message, Receive, Scope, Send
from services.limits import JSON_MEDIA_TYPE
from services.wire import BINARY_MEDIA_TYPE, DTYPE_HEADER, DTYPE_NAME, SHAPE_HEADER

DOCS_PATH = "/docs.json"
ERROR_REF = {"$ref": "#/components/schemas/Error"}
BENTOML_ERROR_SCHEMAS = ("InvalidArgument", "NotFound", "InternalServerError")
SECURITY_SCHEME = "bearerAuth"

ERROR_DETAIL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ErrorDetail",
    "description": 'One problem: where (`loc`, e.g. ["images", 0, 3]), what and its kind.',
    "required": ["loc", "msg", "type"],
    "properties": {
        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"type": "string"},
        "type": {"type": "string"},
        "url": {"type": "string"},
    },
}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "description": "Every error response: a summary and, for client errors, the fields at fault.",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "detail": {"type": "array", "items": {"$ref": "#/components/schemas/ErrorDetail"}},
    },
}


def error_responses(auth: bool, max_body_bytes: int) -> dict[str, dict[str, Any]]:
    """Status code -> response object for everything an inference endpoint can refuse with."""
    described = {
        "400": "Bad Request: the body is not JSON or does not match the request schema; "
        "`detail` names each field at fault",
        "413": f"Payload Too Large: the body has more than {max_body_bytes} bytes",
        "415": f"Unsupported Media Type: Content-Type is not {JSON_MEDIA_TYPE}",
        "500": "Internal Server Error",
        "503": "Service Unavailable: shed by adaptive batching (the request would miss "
        "max_latency_ms) or the worker is overloaded; retry later",
        "504": "Gateway Timeout: not processed within the service's traffic timeout",
    }
    if auth:
        described["401"] = "Unauthorized: missing or wrong bearer token (WWW-Authenticate: Bearer)"
    return {
        code: {"description": text, "content": {JSON_MEDIA_TYPE: {"schema": dict(ERROR_REF)}}}
        for code, text in sorted(described.items())
    }


BINARY_RESPONSE: dict[str, Any] = {
    "schema": {"type": "string", "format": "binary"},
    "x-description": "with `Accept: application/octet-stream`: the same numbers as float32, "
    "little-endian, row-major; the shape is in the X-Array-Shape header",
}
BINARY_HEADERS: dict[str, Any] = {
    SHAPE_HEADER.title(): {
        "description": "binary answers only: the array's shape, comma-separated (e.g. 3,384)",
        "schema": {"type": "string", "pattern": r"^\d+(,\d+)*$"},
    },
    DTYPE_HEADER.title(): {
        "description": "binary answers only: the element type, always float32-le",
        "schema": {"type": "string", "enum": [DTYPE_NAME]},
    },
}


def declare_binary_answer(operation: dict[str, Any]) -> None:
    """Add the optional float32 answer to an operation's 200 response."""
    ok = operation.setdefault("responses", {}).setdefault("200", {"description": "Successful Response"})
    ok.setdefault("content", {})[BINARY_MEDIA_TYPE] = copy.deepcopy(BINARY_RESPONSE)
    ok["headers"] = copy.deepcopy(BINARY_HEADERS)
    ok["description"] = (
        f"{ok.get('description', 'Successful Response')}: JSON by default; float32 bytes when the "
        f"request's Accept header prefers {BINARY_MEDIA_TYPE}"
    )


def patch_openapi(
    spec: dict[str, Any], *, auth: bool, max_body_bytes: int, binary_routes: Sequence[str] = ()
) -> dict[str, Any]:
    """A copy of BentoML's OpenAPI document with the real error bodies, statuses and body rules,
    and the binary answer of the `binary_routes`."""
    patched = copy.deepcopy(spec)
    components = patched.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in BENTOML_ERROR_SCHEMAS:
        schemas.pop(name, None)
    schemas["ErrorDetail"] = copy.deepcopy(ERROR_DETAIL_SCHEMA)
    schemas["Error"] = copy.deepcopy(ERROR_SCHEMA)
    if auth:
        components["securitySchemes"] = {
            SECURITY_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "the token in the file SERVETUNE_AUTH_TOKEN_FILE names",
            }
        }
    for path, item in patched.get("paths", {}).items():
        operation = item.get("post")
        if not isinstance(operation, dict) or "x-bentoml-name" not in operation:
            continue  # BentoML's infrastructure endpoints (GET, always open)
        if path in binary_routes:
            declare_binary_answer(operation)
        responses = operation.setdefault("responses", {})
        for code in [c for c in responses if str(c)[:1] in {"4", "5"}]:
            del responses[code]
        responses.update(error_responses(auth, max_body_bytes))
        body = operation.get("requestBody")
        if isinstance(body, dict):
            schema = body.get("content", {}).get(JSON_MEDIA_TYPE, {}).get("schema", {})
            body["required"] = bool(_resolve(patched, schema).get("required"))
            body["description"] = (
                f"JSON ({JSON_MEDIA_TYPE}; a request without Content-Type is read as JSON), "
                f"at most {max_body_bytes} bytes"
            )
            body["x-max-body-bytes"] = max_body_bytes
        if auth:
            operation["security"] = [{SECURITY_SCHEME: []}]
    return patched


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow one local `$ref` (BentoML inlines request schemas, but do not rely on it)."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    node: Any = spec
    for part in ref[2:].split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


class OpenApiMiddleware:
    """ASGI middleware: serves `/docs.json` through `patch_openapi` (other paths untouched)."""

    def __init__(self, app: App, auth: bool, max_body_bytes: int, binary_routes: Sequence[str] = ()) -> None:
        self.app = app
        self.auth = auth
        self.max_body_bytes = max_body_bytes
        self.binary_routes = list(binary_routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET" or scope.get("path") != DOCS_PATH:
            await self.app(scope, receive, send)
            return
        started: list[Message] = []
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.append(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        if not started:
            return
        start, body = started[0], b"".join(chunks)
        if start["status"] == 200:
            try:
                document = json.loads(body)
            except ValueError:
                document = None
            if isinstance(document, dict):
                patched = patch_openapi(
                    document,
                    auth=self.auth,
                    max_body_bytes=self.max_body_bytes,
                    binary_routes=self.binary_routes,
                )
                body = json.dumps(patched).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})
