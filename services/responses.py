"""Responses for numeric outputs: orjson-encoded JSON by default, raw little-endian float32 on request.

BentoML encodes a return value by validating it into its pydantic output model, dumping that to
Python objects and running the standard library's JSON encoder over them: three passes over the
384 floats of every sentence's vector, on the event loop the worker's requests share. The output
specs here encode the value once with orjson (numpy arrays directly). A client that sends
`Accept: application/octet-stream` gets the array's bytes instead: float32, little-endian,
row-major, with its shape in the `X-Array-Shape` header ("3,384"). JSON stays the default.

`SERVETUNE_FAST_JSON=0` puts BentoML's own encoder back (to measure the difference); the binary
form stays available either way.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import orjson
from _bentoml_sdk.io_models import IORootModel
from bentoml._internal.context import _request_var
from starlette.responses import Response

from services.config import env_flag
from services.wire import (
    BINARY_DTYPE,
    BINARY_MEDIA_TYPE,
    DTYPE_HEADER,
    DTYPE_NAME,
    JSON_MEDIA_TYPE,
    SHAPE_HEADER,
    wants_binary,
)

FAST_JSON_ENV = "SERVETUNE_FAST_JSON"


def fast_json_enabled() -> bool:
    """orjson encoding, on unless SERVETUNE_FAST_JSON=0."""
    return env_flag(FAST_JSON_ENV, default=True)


def binary_body(value: Any) -> tuple[bytes, tuple[int, ...]]:
    """The value as little-endian float32 bytes (row-major) and its shape."""
    array = np.ascontiguousarray(np.asarray(value, dtype=BINARY_DTYPE))
    return array.tobytes(), tuple(int(n) for n in array.shape)


def json_body(value: Any) -> bytes:
    """JSON for lists, dicts, numbers and numpy arrays (float32 written at float32 precision)."""
    if isinstance(value, np.ndarray) and not value.flags.c_contiguous:
        value = np.ascontiguousarray(value)
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def array_response(value: Any, accept: str | None) -> Response:
    """The negotiated response for a numeric output."""
    if wants_binary(accept):
        body, shape = binary_body(value)
        headers = {SHAPE_HEADER: ",".join(map(str, shape)), DTYPE_HEADER: DTYPE_NAME}
        return Response(body, media_type=BINARY_MEDIA_TYPE, headers=headers)
    return Response(json_body(value), media_type=JSON_MEDIA_TYPE)


def request_accept() -> str | None:
    """The Accept header of the request being answered (BentoML keeps it in a context variable)."""
    request = _request_var.get(None)
    return None if request is None else request.headers.get("accept")


class ArrayResponseMixin:
    """`to_http_response` for an output spec whose values are numbers or arrays of them."""

    media_type: ClassVar[str | None] = JSON_MEDIA_TYPE

    @classmethod
    async def to_http_response(cls, obj: Any, serde: Any) -> Response:
        accept = request_accept()
        if fast_json_enabled() or wants_binary(accept):
            return array_response(obj, accept)
        plain = obj.tolist() if isinstance(obj, np.ndarray) else obj
        return await super().to_http_response(plain, serde)  # type: ignore[misc]


class VectorRows(ArrayResponseMixin, IORootModel[list[list[float]]]):
    """Output spec: one vector of floats per input row (e.g. a float32 array of shape (n, d))."""


class FloatRows(ArrayResponseMixin, IORootModel[list[float]]):
    """Output spec: one float per input row."""


def binary_routes(service: Any) -> list[str]:
    """The routes of a `@bentoml.service` whose answers can be binary (an array output spec)."""
    return sorted(
        method.route
        for method in service.apis.values()
        if isinstance(method.output_spec, type) and issubclass(method.output_spec, ArrayResponseMixin)
    )
