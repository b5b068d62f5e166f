"""Request bodies drawn from held-out data: digits test images, shipped sentences, no-op rows."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

SERVICES = ("digits", "embedding", "noop")


@dataclass(frozen=True)
class Endpoint:
    """Default path and JSON field of a service's batchable endpoint."""

    path: str
    field: str


ENDPOINTS = {
    "digits": Endpoint("/predict", "images"),
    "embedding": Endpoint("/encode", "sentences"),
    "noop": Endpoint("/echo", "items"),
}


def load_sentences() -> list[str]:
    """The shipped sentence set (varied lengths) the embedding load sends."""
    from services.models.sentences import load_sentences as shipped

    sentences: list[str] = list(shipped())
    return sentences


def digits_rows() -> list[list[float]]:
    """Held-out digits images as 64 raw intensities each (never seen in training)."""
    from services.models.data import held_out_raw

    images, _ = held_out_raw()
    return [[float(v) for v in row] for row in images.reshape(len(images), -1)]


def rows_for(service: str) -> Sequence[object]:
    """The pool of rows one request's batch is drawn from."""
    if service == "digits":
        return digits_rows()
    if service == "embedding":
        return load_sentences()
    if service == "noop":
        return [float(i % 97) for i in range(1000)]
    raise ValueError(f"unknown service {service!r}; choose one of {list(SERVICES)}")


def bodies(service: str, rows_per_request: int = 1, count: int = 256, seed: int = 0) -> list[bytes]:
    """`count` pre-encoded JSON bodies of `rows_per_request` random rows each."""
    if rows_per_request < 1:
        raise ValueError(f"rows_per_request must be >= 1, got {rows_per_request}")
    pool = rows_for(service)
    rng = random.Random(seed)
    field = ENDPOINTS[service].field
    return [
        json.dumps({field: [pool[rng.randrange(len(pool))] for _ in range(rows_per_request)]}).encode()
        for _ in range(count)
    ]
