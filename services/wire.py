"""The binary answer's wire format, shared by the services and the client (no BentoML import).

An endpoint with an array output answers `Accept: application/octet-stream` with the array's
numbers as float32, little-endian, row-major, and its shape in `X-Array-Shape` ("3,384").
"""

from __future__ import annotations

JSON_MEDIA_TYPE = "application/json"
BINARY_MEDIA_TYPE = "application/octet-stream"
SHAPE_HEADER = "x-array-shape"
DTYPE_HEADER = "x-array-dtype"
DTYPE_NAME = "float32-le"  # the DTYPE_HEADER value
BINARY_DTYPE = "<f4"  # numpy's name for little-endian float32


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def wants_binary(accept: str | None) -> bool:
    """Whether an Accept header prefers `application/octet-stream` to JSON (q-values respected;
    a tie, a wildcard alone or anything else means JSON)."""
    if not accept:
        return False
    best: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        if media in {JSON_MEDIA_TYPE, BINARY_MEDIA_TYPE, "application/*", "*/*"}:
            best[media] = max(best.get(media, 0.0), _quality(params))
    binary = best.get(BINARY_MEDIA_TYPE, 0.0)
    if JSON_MEDIA_TYPE in best:
        json_q = best[JSON_MEDIA_TYPE]
    else:
        json_q = max(best.get("application/*", 0.0), best.get("*/*", 0.0))
    return binary > 0.0 and binary > json_q
