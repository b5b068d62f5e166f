"""A small Python client for the servetune services and any BentoML service (httpx; injectable
transport for tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from services.wire import BINARY_DTYPE, BINARY_MEDIA_TYPE, SHAPE_HEADER

DEFAULT_URL = "http://127.0.0.1:3000"


class ServiceError(RuntimeError):
    """The service answered with an error status; `message` is its JSON error text."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.message = message


class ServetuneClient:
    """Calls DigitsClassifier (/predict) and TextEmbedding (/encode) over HTTP, and any other
    BentoML service's endpoint with a JSON body (`call`).

    `token`: the bearer token of a service started with `--auth-token-file` (sent on every
    request as `Authorization: Bearer <token>`).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, transport=transport, headers=headers)

    def __enter__(self) -> ServetuneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, payload: dict[str, Any]) -> Any:
        return self.call(path, payload)

    def call(self, endpoint: str, body: Any) -> Any:
        """POST `body` as JSON to `endpoint` ("/encode" or "encode"); the JSON answer (its text
        when it is not JSON). ServiceError on a 4xx/5xx answer."""
        response = self._http.post("/" + endpoint.strip("/"), json=body)
        if response.status_code >= 400:
            raise ServiceError(response.status_code, _error_text(response))
        try:
            return response.json()
        except ValueError:
            return response.text

    def classify(
        self, images: Sequence[Sequence[float]] | Sequence[Sequence[Sequence[float]]]
    ) -> list[dict[str, Any]]:
        """Labels and probabilities for 8x8 images (64 values or 8 rows of 8, 0..16)."""
        return list(self._post("/predict", {"images": [_plain(img) for img in images]}))

    def embed(self, sentences: Sequence[str]) -> list[list[float]]:
        """Unit-length embedding vectors, one per sentence."""
        return list(self._post("/encode", {"sentences": list(sentences)}))

    def embed_array(self, sentences: Sequence[str]) -> np.ndarray:
        """The same vectors as a float32 array of shape (sentences, dimensions), fetched in the
        compact binary form (`Accept: application/octet-stream`): 4 bytes per number instead of
        JSON text."""
        return self.call_array("/encode", {"sentences": list(sentences)})

    def call_array(self, endpoint: str, body: Any) -> np.ndarray:
        """POST `body` as JSON to an endpoint that can answer in binary; its float32 array.
        ServiceError on a 4xx/5xx answer or an answer that is not the binary form."""
        response = self._http.post(
            "/" + endpoint.strip("/"), json=body, headers={"accept": BINARY_MEDIA_TYPE}
        )
        if response.status_code >= 400:
            raise ServiceError(response.status_code, _error_text(response))
        return decode_array(response)

    def info(self) -> dict[str, Any]:
        """What the answering worker runs: model tag, knobs, device, threads."""
        return dict(self._post("/info", {}))

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False


def decode_array(response: httpx.Response) -> np.ndarray:
    """The float32 array of a binary answer (its shape from the X-Array-Shape header)."""
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    shape_text = response.headers.get(SHAPE_HEADER)
    if media_type != BINARY_MEDIA_TYPE or shape_text is None:
        raise ServiceError(
            response.status_code,
            f"expected a {BINARY_MEDIA_TYPE} answer with {SHAPE_HEADER}, got {media_type or 'no type'}",
        )
    try:
        shape = tuple(int(n) for n in shape_text.split(",") if n.strip())
        return np.frombuffer(response.content, dtype=BINARY_DTYPE).reshape(shape)
    except ValueError as exc:
        raise ServiceError(response.status_code, f"malformed binary answer: {exc}") from exc


def _plain(image: Any) -> Any:
    tolist = getattr(image, "tolist", None)
    return tolist() if callable(tolist) else image


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, list) and body:
        body = body[0]
    if isinstance(body, dict):
        detail = body.get("detail")
        error = str(body.get("error", body))
        if isinstance(detail, list) and detail:
            first = detail[0]
            where = ".".join(str(p) for p in first.get("loc", []))
            return f"{error}: {where}: {first.get('msg', '')}"
        if isinstance(detail, str) and "error" not in body:
            return detail  # Starlette's own answers: {"detail": "Not Found"}
        return error
    return str(body)
