"""Before a user's service is loaded: does it accept the request bodies at all?

A requests file whose bodies the service rejects would be tuned on errors: every config would
"fail the SLO" and the report would blame the configs. The first server that starts gets a few
of the requests, one at a time; a 4xx (or a 5xx for every one) stops the study with the body.
A 5xx says only "please check the server log": the message quotes the exception the server's log
ends with and where the service's own code raised it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

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


FRAME_LINE = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')
LIBRARY_PARTS = ("site-packages", "dist-packages", "/lib/python")


def raised_in_log(log: str) -> str | None:
    """The last exception a server log shows, with the last frame outside installed packages
    (the service's own code) when there is one: "TypeError: ... (service.py, line 15, in score)".
    A traceback's exception line is the first unindented line after its last frame."""
    lines = [line.rstrip() for line in log.splitlines()]
    frames = [i for i, line in enumerate(lines) if FRAME_LINE.match(line)]
    if not frames:
        return None
    raised = next((line for line in lines[frames[-1] + 1 :] if line and not line[0].isspace()), None)
    if raised is None:
        return None
    where = ""
    for i in reversed(frames):
        frame = FRAME_LINE.match(lines[i])
        if frame and not any(part in frame["path"] for part in LIBRARY_PARTS):
            where = f" ({frame['path']}, line {frame['line']}, in {frame['func']})"
            break
    return raised.strip()[:400] + where


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
    server_log: Callable[[], str] | None = None,
) -> None:
    """POST a sample of `requests` to the server at `url`; RequestsRejected names the first bad one
    (and, for `synthetic` bodies, says where real ones go; with `server_log`, what a service that
    failed them all raised)."""
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
            raised = raised_in_log(server_log()) if server_log is not None else None
            raise RequestsRejected(
                f"the service failed every sampled request of {source}; the first: {server_errors[0]}"
                + (f"\nthe server's log ends with: {raised}" if raised else "")
                + (f"\n{SYNTHETIC_HINT}; nothing was tuned" if synthetic else "\nnothing was tuned")
            )
    finally:
        if own:
            http.close()
