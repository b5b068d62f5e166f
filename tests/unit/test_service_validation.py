"""Input validation on the service classes, with the model replaced by a fake."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

import services.digits as digits
import services.embedding as embedding


def validate(service: Any, api: str, payload: dict[str, Any]) -> Any:
    return service.apis[api].input_spec.model_validate(payload)


GOOD_FLAT = [0.0] * 64
GOOD_GRID = [[16.0] * 8 for _ in range(8)]


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("wrong shape", {"images": [[1.0, 2.0, 3.0]]}),
        ("wrong grid shape", {"images": [[[1.0] * 8] * 7]}),
        ("wrong type", {"images": "abc"}),
        ("string pixel", {"images": [["x"] * 64]}),
        ("numeric string pixel", {"images": [["1"] + [0.0] * 63]}),
        ("boolean pixel", {"images": [[False] + [0.0] * 63]}),
        ("boolean grid pixel", {"images": [[[True] * 8] * 8]}),
        ("null pixel", {"images": [[None] + [0.0] * 63]}),
        ("nan", {"images": [[float("nan")] + [0.0] * 63]}),
        ("inf", {"images": [[float("inf")] + [0.0] * 63]}),
        ("out of range", {"images": [[17.0] * 64]}),
        ("negative", {"images": [[-1.0] * 64]}),
        ("empty batch", {"images": []}),
        ("too many", {"images": [GOOD_FLAT] * (digits.MAX_IMAGES_PER_REQUEST + 1)}),
        ("missing field", {}),
    ],
)
def test_digits_rejects_bad_input(name: str, payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate(digits.DigitsClassifier, "predict", payload)


def test_digits_accepts_flat_and_grid_images() -> None:
    parsed = validate(digits.DigitsClassifier, "predict", {"images": [GOOD_FLAT, GOOD_GRID]})
    assert len(parsed.images) == 2


def test_digits_json_takes_integer_pixels_but_not_booleans() -> None:
    spec = digits.DigitsClassifier.apis["predict"].input_spec
    parsed = spec.model_validate_json(json.dumps({"images": [[16] + [0] * 63]}))
    assert parsed.images[0][:2] == [16.0, 0.0]
    with pytest.raises(ValidationError) as refused:
        spec.model_validate_json(json.dumps({"images": [[False] + [0] * 63]}))
    assert refused.value.errors()[0]["loc"][:2] == ("images", 0)


@pytest.mark.parametrize(
    "payload",
    [
        {"sentences": []},
        {"sentences": [""]},
        {"sentences": ["   "]},
        {"sentences": [1, 2]},
        {"sentences": [True]},
        {"sentences": "one sentence, not a list"},
        {"sentences": ["x" * (embedding.MAX_SENTENCE_CHARS + 1)]},
        {"sentences": ["ok"] * (embedding.MAX_SENTENCES_PER_REQUEST + 1)},
    ],
)
def test_embedding_rejects_bad_input(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate(embedding.TextEmbedding, "encode", payload)


class FixedNet(torch.nn.Module):
    """Fake digits network: the logits favour the digit equal to the first pixel value."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = (x[:, 0] * 16).round().long().clamp(0, 9)
        return torch.nn.functional.one_hot(idx, 10).float() * 10


def test_digits_predict_with_a_patched_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        digits, "load_digits_variant", lambda variant, tag, device: ("digits:fake", FixedNet())
    )
    service = digits.DigitsClassifier()
    flat = [3.0] + [0.0] * 63
    grid = [[7.0] + [0.0] * 7] + [[0.0] * 8 for _ in range(7)]
    out = digits.DigitsClassifier.apis["predict"].func(service, [flat, grid])
    assert [p.label for p in out] == [3, 7]
    assert all(abs(sum(p.probabilities) - 1.0) < 1e-4 for p in out)


def test_embedding_encode_with_a_patched_model(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeEncoder:
        max_seq_length = 256

        def encode(self, sentences: list[str], **kwargs: Any) -> np.ndarray:
            vecs = np.array([[len(s), 1.0, 0.0] for s in sentences], dtype=np.float32)
            if kwargs.get("normalize_embeddings"):  # as sentence-transformers: only when asked
                vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
            return vecs

    monkeypatch.setattr(
        embedding, "load_minilm_variant", lambda variant, tag, device: ("minilm:fake", FakeEncoder())
    )
    service = embedding.TextEmbedding()
    out = embedding.TextEmbedding.apis["encode"].func(service, ["a", "abc"])
    assert len(out) == 2
    assert all(abs(sum(v * v for v in vec) - 1.0) < 1e-5 for vec in out), "unit-length vectors"
    assert out[0] == pytest.approx([2**-0.5, 2**-0.5, 0.0]), "one row per sentence, in order"
    assert out[1] == pytest.approx([3 / 10**0.5, 1 / 10**0.5, 0.0])
