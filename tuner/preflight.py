"""Before a user's service is loaded: does it accept the request bodies at all?

A requests file whose bodies the service rejects would be tuned on errors: every config would
"fail the SLO" and the report would blame the configs. The first server that starts gets a few
of the requests, one at a time; a 4xx (or a 5xx for every one) stops the study with the body.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

SAMPLE = 4  # requests sent, the first ones of each route first
TIMEOUT_S = 60.0


class RequestsRejected(ValueError):
    """The service answers the load's requests with errors: tuning on them would mean nothing."""


def sample_requests(
    requests: Sequence[tuple[str, bytes]], count: int = SAMPLE
) -> list[tuple[int, str, bytes]]:
    """(1-based position, route, body): the first request of every route, then the next ones."""
    chosen: list[tuple[int, str, bytes]] = []
    seen: set[str] = set()
    for position, (route, body) in enumerate(requests, start=1):
        if route not in seen:
            seen.add(route)
            chosen.append((position, route, body))
    for position, (route, body) in enumerate(requests, start=1):
        if len(chosen) >= max(count, len(seen)):
            break
        if (position, route, body) not in chosen:
            chosen.append((position, route, body))
    return chosen[: max(count, len(seen))]


SYNTHETIC_HINT = (
    "these bodies were made up from the API's OpenAPI schema, which does not say everything a body "
    "needs (an array's shape, a string's format): pass --requests FILE with bodies your service accepts"
)


def check_requests(
    url: str,
    requests: Sequence[tuple[str, bytes]],
    source: str,
    client: httpx.Client | None = None,
    synthetic: bool = False,
) -> None:
    """POST a sample of `requests` to the server at `url`; RequestsRejected names the first bad one
    (and, for `synthetic` bodies, says where real ones go)."""
    fix = SYNTHETIC_HINT if synthetic else "fix the request bodies"
    own = client is None
    http = client or httpx.Client(timeout=TIMEOUT_S)
    server_errors: list[str] = []
    try:
        sample = sample_requests(requests)
        for position, route, body in sample:
            response = http.post(
                url.rstrip("/") + route, content=body, headers={"Content-Type": "application/json"}
            )
            text = response.text.strip().replace("\n", " ")[:400]
            if 400 <= response.status_code < 500:
                raise RequestsRejected(
                    f"the service answered {response.status_code} to request {position} of {source} "
                    f"(POST {route}): {text}\n{fix}; nothing was tuned"
                )
            if response.status_code >= 500:
                server_errors.append(f"request {position} (POST {route}): {response.status_code} {text}")
        if sample and len(server_errors) == len(sample):
            raise RequestsRejected(
                f"the service failed every sampled request of {source}; the first: {server_errors[0]}"
                + (f"\n{SYNTHETIC_HINT}; nothing was tuned" if synthetic else "")
            )
    finally:
        if own:
            http.close()
