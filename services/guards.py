"""The request guards every servetune service puts in front of its APIs (one call per service)."""

from __future__ import annotations

from typing import Any

from services.auth import BearerAuthMiddleware, configured_token_file, read_token
from services.limits import MAX_BODY_BYTES, BodyLimitMiddleware, JsonOnlyMiddleware
from services.openapi import OpenApiMiddleware
from services.responses import binary_routes


def install_guards(service: Any) -> None:
    """Add the guards to a `@bentoml.service`, outermost first.

    1. bearer-token auth, only when SERVETUNE_AUTH_TOKEN_FILE is set (the file is checked here,
       at import, so a bad file stops `bentoml serve` at once instead of crash-looping workers);
    2. 415 for a body that is not JSON; 3. 413 for a body over MAX_BODY_BYTES;
    4. the OpenAPI document fixed to declare all of the above, and the float32 answer of the
       array endpoints (services/openapi.py, services/responses.py).
    BentoML's metrics middleware sits outside all of them, so refusals are counted.
    """
    token_file = configured_token_file()
    if token_file is not None:
        read_token(token_file)
        service.add_asgi_middleware(BearerAuthMiddleware, token_file=token_file)
    service.add_asgi_middleware(JsonOnlyMiddleware)
    service.add_asgi_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    service.add_asgi_middleware(
        OpenApiMiddleware,
        auth=token_file is not None,
        max_body_bytes=MAX_BODY_BYTES,
        binary_routes=binary_routes(service),
    )
