"""Optional bearer-token authentication for the inference endpoints.

Off unless the environment variable SERVETUNE_AUTH_TOKEN_FILE names a file holding the token
(the token itself never appears on a command line or in the environment). When on, every
request needs `Authorization: Bearer <token>` except the probe, metrics and docs paths, which
stay open for Kubernetes probes, Prometheus scraping and the try-it page. A missing or wrong
token gets 401 with `WWW-Authenticate: Bearer` and the project's JSON error body; the token
is compared in constant time.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from services.asgi import App, Receive, Scope, Send, header, send_error

AUTH_TOKEN_FILE_ENV = "SERVETUNE_AUTH_TOKEN_FILE"
MIN_TOKEN_CHARS = 16
# What `servetune deploy --auth` writes into the Kubernetes Secret for the user to replace;
# a service refuses to start with it, so a forgotten placeholder cannot become the password.
PLACEHOLDER_TOKEN = "REPLACE-WITH-A-RANDOM-TOKEN"
# Probes, metrics scraping and the docs never need the token.
OPEN_PATHS = frozenset({"/metrics", "/readyz", "/livez", "/healthz", "/", "/docs.json", "/schema.json"})
OPEN_PREFIXES = ("/static_content/", "/assets/")
REALM = b'Bearer realm="servetune"'


class TokenFileError(ValueError):
    """The token file is missing, unreadable, too short or still the deploy placeholder."""


def read_token(path: str | Path) -> str:
    """The token in `path` (surrounding whitespace dropped); raises TokenFileError."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read the auth token file {path}: {exc}") from None
    if token == PLACEHOLDER_TOKEN:
        raise TokenFileError(f"{path}: still the placeholder token; put a random secret there")
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenFileError(f"{path}: the token must have at least {MIN_TOKEN_CHARS} characters")
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise TokenFileError(f"{path}: the token must be printable ASCII without spaces")
    return token


def configured_token_file() -> str | None:
    """The token file named by SERVETUNE_AUTH_TOKEN_FILE, or None when auth is off."""
    value = os.environ.get(AUTH_TOKEN_FILE_ENV, "").strip()
    return value or None


def is_open(path: str) -> bool:
    """Whether `path` is served without a token."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class BearerAuthMiddleware:
    """ASGI middleware: 401 unless the request carries the bearer token of `token_file`.

    The file is read once, when the worker builds its app; a bad file fails the start.
    """

    def __init__(self, app: App, token_file: str) -> None:
        self.app = app
        self._token = read_token(token_file).encode("ascii")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        given = bearer_token(header(scope, b"authorization"))
        if given is None:
            await send_error(
                send,
                401,
                "authentication required: send Authorization: Bearer <token>",
                loc=["header", "authorization"],
                msg="a bearer token is required",
                kind="missing_token",
                headers=[(b"www-authenticate", REALM)],
            )
            return
        if not hmac.compare_digest(given, self._token):
            await send_error(
                send,
                401,
                "invalid bearer token",
                loc=["header", "authorization"],
                msg="the bearer token is not valid",
                kind="invalid_token",
                headers=[(b"www-authenticate", REALM + b', error="invalid_token"')],
            )
            return
        await self.app(scope, receive, send)


def bearer_token(value: bytes | None) -> bytes | None:
    """The credentials of an `Authorization: Bearer <token>` header value, else None."""
    if value is None:
        return None
    scheme, _, credentials = value.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    credentials = credentials.strip()
    return credentials or None
