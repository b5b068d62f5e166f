"""Digits variants through real `bentoml serve`: each loads and answers; the guard refuses at start-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bentoml
import httpx
import pytest

from services.models.data import held_out_raw
from services.models.store import ARCH_FILE, save_digits
from services.models.variants import load_digits_variant
from tuner.server import BentoServer, ServerError, ServerSpec, service_target

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def digits_rows(models_in_store: dict[str, str]) -> list[dict[str, Any]]:
    from services.models.variantbuild import build_digits

    return build_digits(threads=1, finetune_epochs=2, repeats=1)


def _spec(variant: str, tag: str) -> ServerSpec:
    args = {"max_batch_size": 4, "max_latency_ms": 5000, "threads": 1, "variant": variant, "model_tag": tag}
    return ServerSpec(service=service_target("digits"), args=args)


@pytest.mark.parametrize("variant", ["int8", "pruned"])
def test_each_digits_variant_serves(digits_rows: list[dict[str, Any]], variant: str) -> None:
    row = next(r for r in digits_rows if r["variant"] == variant)
    images, labels = held_out_raw()
    with BentoServer(_spec(variant, row["tag"])) as server:
        info = httpx.post(f"{server.url}/info", json={}, timeout=30).json()
        assert info["model_tag"] == row["tag"]
        assert info["knobs"]["variant"] == variant
        body = {"images": [img.tolist() for img in images[:20]]}
        reply = httpx.post(f"{server.url}/predict", json=body, timeout=30)
    assert reply.status_code == 200
    predicted = [p["label"] for p in reply.json()]
    assert sum(int(p == y) for p, y in zip(predicted, labels[:20], strict=True)) >= 15


def test_guard_refuses_a_variant_below_its_floor(digits_rows: list[dict[str, Any]]) -> None:
    pruned = next(r for r in digits_rows if r["variant"] == "pruned")
    model = bentoml.models.get(pruned["tag"])
    _, net = load_digits_variant("pruned", pruned["tag"])
    meta = {**model.info.metadata, "floor": pruned["quality"] + 0.05, "eligible": False}
    arch = json.loads(Path(model.path_of(ARCH_FILE)).read_text())
    forced = save_digits(net, arch, meta, variant="pruned")
    try:
        with pytest.raises(ServerError, match=r"not eligible[^\n]*accuracy 0\.\d{4} < floor"):
            BentoServer(_spec("pruned", forced)).start(ready_timeout_s=60)
    finally:
        bentoml.models.delete(forced)  # the real pruned entry is "latest" again
