"""Each compressed variant served through real `bentoml serve`; the guard refuses a weak one."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import bentoml
import httpx
import pytest

from core.deployer import FailFastServer
from core.serveconfig import ServeConfig
from core.server import ServerError
from services.models.data import held_out_raw
from services.models.store import save_digits
from services.models.variants import load_digits_variant

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def digits_rows(digits_tag: str) -> Iterator[list[dict[str, object]]]:
    from services.models.variantbuild import build_digits

    yield build_digits(threads=1, finetune_epochs=2, repeats=1)


def _serve(config: ServeConfig, model_tag: str | None = None) -> FailFastServer:
    spec = config.server_spec()
    if model_tag is not None:
        spec = dataclasses.replace(spec, args={**spec.args, "model_tag": model_tag})
    server = FailFastServer(spec)
    server.start(ready_timeout_s=60)
    return server


@pytest.mark.parametrize("variant", ["int8", "pruned"])
def test_digits_variant_is_served(variant: str, digits_rows: list[dict[str, object]]) -> None:
    row = next(r for r in digits_rows if r["variant"] == variant)
    assert row["eligible"] is True
    server = _serve(ServeConfig(service="digits", variant=variant, threads=1), str(row["tag"]))
    try:
        images, labels = held_out_raw()
        answer = httpx.post(f"{server.url}/predict", json={"images": images[:20].tolist()}, timeout=30)
        assert answer.status_code == 200
        predicted = [p["label"] for p in answer.json()]
        assert sum(int(p == y) for p, y in zip(predicted, labels[:20], strict=True)) >= 17
        info = httpx.post(f"{server.url}/info", json={}, timeout=10).json()
        assert info["model_tag"] == row["tag"]
        assert info["knobs"]["variant"] == variant
    finally:
        server.stop()


@pytest.mark.slow  # the default suite serves digits variants through the same load-time recipe path
def test_minilm_int8_is_served(minilm_tag: str) -> None:
    from services.models.sentences import load_paraphrase_pairs, load_sentences
    from services.models.variantbuild import build_minilm

    rows = build_minilm(
        threads=2, repeats=1, variants=("int8",), calibration_every=2,
        sentences=load_sentences()[:40], pairs=load_paraphrase_pairs()[:8],
    )  # fmt: skip
    int8 = rows[1]
    assert int8["eligible"] is True, int8  # the sensitivity pass keeps it above the 0.98 floor
    assert int8["quantized_layers"] >= 30
    server = _serve(ServeConfig(service="embedding", variant="int8", threads=2), str(int8["tag"]))
    try:
        sentences = ["a cat sits on the mat", "the stock market fell today"]
        answer = httpx.post(f"{server.url}/encode", json={"sentences": sentences}, timeout=60)
        assert answer.status_code == 200
        vectors = answer.json()
        assert len(vectors) == 2 and len(vectors[0]) == 384
        assert httpx.post(f"{server.url}/info", json={}, timeout=10).json()["model_tag"] == int8["tag"]
    finally:
        server.stop()


def test_guard_refuses_a_variant_below_its_floor(digits_rows: list[dict[str, object]]) -> None:
    pruned = next(r for r in digits_rows if r["variant"] == "pruned")
    _, net = load_digits_variant("pruned", str(pruned["tag"]))
    model = bentoml.models.get(str(pruned["tag"]))
    meta = {**model.info.metadata, "floor": float(pruned["quality"]) + 0.05}  # type: ignore[arg-type]
    forced = save_digits(net, {"arch": "cnn", "width": 16, "dropout": 0.1}, meta, variant="pruned")
    try:
        with pytest.raises(ServerError) as failure:
            _serve(ServeConfig(service="digits", variant="pruned", threads=1), forced)
    finally:
        bentoml.models.delete(forced)  # the real pruned variant is "latest" again
    message = str(failure.value)
    assert "not eligible" in message and "< floor" in message and forced in message
    kept_log = Path(message.rsplit("(full log: ", 1)[1].rstrip(")"))
    assert kept_log.is_file(), "a server that failed keeps its log"
    shutil.rmtree(kept_log.parent)
