"""Request bodies: rows drawn from each service's registered pool (held-out data, shipped sentences)."""

from __future__ import annotations

import json
import random

from core.registry import service_spec


def bodies(service: str, rows_per_request: int = 1, count: int = 256, seed: int = 0) -> list[bytes]:
    """`count` pre-encoded JSON bodies of `rows_per_request` random rows each."""
    if rows_per_request < 1:
        raise ValueError(f"rows_per_request must be >= 1, got {rows_per_request}")
    spec = service_spec(service)
    pool = spec.row_pool()
    rng = random.Random(seed)
    field = spec.row_field
    return [
        json.dumps({field: [pool[rng.randrange(len(pool))] for _ in range(rows_per_request)]}).encode()
        for _ in range(count)
    ]
