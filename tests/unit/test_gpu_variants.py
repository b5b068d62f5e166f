"""fp16 / bf16 variants: cast recipes, the quality guard measured on CPU, GPU-only placement."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import bentoml
import numpy as np
import pytest
import torch
from torch import nn

from services.models import variantbuild, variants
from services.models.compress import CastIO, apply_half, cast_recipe, fp16_rounded, recipe_dtype
from services.models.quality import DIGITS_MAX_ACCURACY_DROP, MINILM_MIN_COSINE
from services.models.variants import (
    VariantDeviceError,
    VariantNotEligibleError,
    check_device,
    entry_device,
    load_digits_variant,
    load_minilm_variant,
    model_dtype,
    read_recipe,
    stored_variant_devices,
)

Cleanup = Callable[[list[dict[str, Any]]], None]


@pytest.fixture
def delete_built() -> Iterator[Cleanup]:
    """Delete the store entries a test built, so later tests see the store as it was."""
    built: list[str] = []

    def register(rows: list[dict[str, Any]]) -> None:
        built.extend(str(r["tag"]) for r in rows if r["variant"] != "fp32")

    yield register
    for tag in built:
        bentoml.models.delete(tag)


@pytest.fixture
def any_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let fp16 / bf16 load on this CPU-only machine (the device check has its own tests)."""
    monkeypatch.setattr(variants, "check_device", lambda *_args: None)


@pytest.mark.parametrize(("variant", "dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_cast_recipe_casts_every_weight_and_leaves_the_source(variant: str, dtype: torch.dtype) -> None:
    net = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 4))
    half = apply_half(net, cast_recipe(variant))
    assert {p.dtype for p in half.parameters()} == {dtype}
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    wrapped = CastIO(half, dtype)
    x = torch.randn(3, 8)
    out = wrapped(x)  # float32 in, float32 out, half inside
    assert out.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(out, net(x), atol=0.05)
    assert model_dtype(wrapped) == str(dtype).removeprefix("torch.")


def test_fp16_rounded_keeps_fp32_compute_with_fp16_weights() -> None:
    torch.manual_seed(0)
    net = nn.Linear(16, 4)
    rounded = fp16_rounded(net)
    assert rounded.weight.dtype == torch.float32
    assert torch.equal(rounded.weight, net.weight.detach().half().float())
    assert not torch.equal(rounded.weight, net.weight)  # random fp32 weights do lose bits


def test_bad_recipes_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="recipe dtype: 'int4'"):
        recipe_dtype({"dtype": "int4"})
    with pytest.raises(ValueError, match="variant: 'int8' is not a half-precision variant"):
        cast_recipe("int8")


def test_device_check_names_variant_and_device() -> None:
    for variant in ("fp16", "bf16"):
        with pytest.raises(
            VariantDeviceError, match=rf"variant '{variant}' of digits runs on GPU only.*'cpu'"
        ):
            check_device(variant, "cpu", "digits")
        check_device(variant, "cuda:1")
        check_device(variant, "cuda")
    with pytest.raises(
        VariantDeviceError, match=r"'int8' of minilm runs on CPU only, not on device 'cuda:0'"
    ):
        check_device("int8", "cuda:0", "minilm")
    for device in ("cpu", "cuda:0"):
        check_device("fp32", device)
        check_device("pruned", device)
    with pytest.raises(ValueError, match="device: 'mps'"):
        check_device("fp32", "mps")
    assert issubclass(VariantDeviceError, VariantNotEligibleError)  # services refuse it the same way
    assert [entry_device(v) for v in ("fp16", "bf16", "int8", "pruned")] == ["cuda", "cuda", "cpu", "any"]


def test_half_variants_are_refused_on_a_cpu_worker_before_the_store_is_read() -> None:
    from services.models.inprocess import digits_batch_runner

    with pytest.raises(VariantDeviceError, match="'fp16' of digits runs on GPU only"):
        load_digits_variant("fp16", device="cpu")
    with pytest.raises(VariantDeviceError, match="'bf16' of minilm runs on GPU only"):
        load_minilm_variant("bf16", device="cpu")
    with pytest.raises(VariantDeviceError, match="'bf16' of digits"):
        digits_batch_runner("bf16")


def test_digits_half_variants_build_guard_and_load(
    digits_tag: str, delete_built: Cleanup, monkeypatch: pytest.MonkeyPatch, one_torch_thread: None
) -> None:
    rows = variantbuild.build_digits(threads=1, repeats=1, variants=("fp16", "bf16"))
    delete_built(rows)
    fp32, fp16, bf16 = rows
    for row, dtype in ((fp16, "float16"), (bf16, "bfloat16")):
        assert row["floor"] == pytest.approx(fp32["quality"] - DIGITS_MAX_ACCURACY_DROP, abs=1e-6)
        assert row["eligible"] is True and row["quality"] >= row["floor"]
        assert "throughput_bs1" not in row  # served on GPUs only: no CPU throughput
        entry = bentoml.models.get(row["tag"])
        assert entry.info.metadata["device"] == "cuda"
        assert entry.info.metadata["source_tag"] == fp32["tag"]
        assert read_recipe(entry)["dtype"] == dtype
        with pytest.raises(VariantDeviceError, match="not on device 'cpu'"):
            load_digits_variant(str(row["variant"]), str(row["tag"]), "cpu")
    assert stored_variant_devices("digits")["fp16"] == frozenset({"cuda"})
    assert stored_variant_devices("digits")["fp32"] == frozenset({"cpu", "cuda"})

    with monkeypatch.context() as patch:  # the load path, with the device check lifted
        patch.setattr(variants, "check_device", lambda *_args: None)
        _, net = load_digits_variant("fp16", str(fp16["tag"]), "cpu")
        assert model_dtype(net) == "float16"
        logits = net(torch.rand(4, 64))
        assert logits.dtype == torch.float32 and logits.shape == (4, 10)

    # Corrupted half weights: the guard measures them below the floor and the loader refuses them.
    def corrupted(model: nn.Module, recipe: dict[str, Any], inplace: bool = False) -> nn.Module:
        half = apply_half(model, recipe, inplace)
        with torch.no_grad():
            for param in half.parameters():
                param.copy_(torch.randn_like(param))
        return half

    monkeypatch.setattr(variantbuild, "apply_half", corrupted)
    broken = variantbuild.build_digits(threads=1, repeats=1, variants=("fp16",))
    delete_built(broken)
    assert broken[1]["eligible"] is False and broken[1]["quality"] < broken[1]["floor"]
    with pytest.raises(VariantNotEligibleError, match=r"accuracy 0\.\d{4} < floor"):
        load_digits_variant("fp16", str(broken[1]["tag"]), "cuda:0")  # refused before any CUDA call


def test_minilm_half_entry_is_cast_from_the_fp32_source(minilm_tag: str, any_device: None) -> None:
    from services.models.variantbuild import _save_recipe_entry

    meta = {"quality_metric": "mean_cosine", "quality": 0.999, "floor": MINILM_MIN_COSINE, "eligible": True,
            "source_tag": minilm_tag, "device": "cuda"}  # fmt: skip
    mislabelled = _save_recipe_entry("minilm", "fp16", cast_recipe("bf16"), meta)
    try:
        with pytest.raises(ValueError, match=r"recipe dtype torch\.bfloat16 does not match variant 'fp16'"):
            load_minilm_variant("fp16", mislabelled, "cpu")
    finally:
        bentoml.models.delete(mislabelled)
    tag = _save_recipe_entry("minilm", "bf16", cast_recipe("bf16"), meta)
    try:
        assert stored_variant_devices("minilm")["bf16"] == frozenset({"cuda"})
        _, model = load_minilm_variant("bf16", tag, "cpu")
        assert model_dtype(model) == "bfloat16"
        vectors = np.asarray(
            model.encode(["a cat sits on the mat"], normalize_embeddings=True), dtype=np.float32
        )
        assert vectors.shape == (1, 384) and abs(float(np.linalg.norm(vectors)) - 1.0) < 0.02
    finally:
        bentoml.models.delete(tag)


@pytest.mark.slow  # ~10 s on a busy 2-core machine: loads MiniLM and embeds with three copies
def test_minilm_half_variants_build_and_guard(minilm_tag: str, delete_built: Cleanup) -> None:
    from services.models.sentences import load_paraphrase_pairs, load_sentences

    rows = variantbuild.build_minilm(
        threads=2, repeats=1, variants=("fp16", "bf16"), sentences=load_sentences()[:8],
        pairs=load_paraphrase_pairs()[:4],
    )  # fmt: skip
    delete_built(rows)
    fp32, fp16, bf16 = rows
    for row in (fp16, bf16):
        assert row["quality_metric"] == "mean_cosine" and row["floor"] == MINILM_MIN_COSINE
        assert row["eligible"] is True and MINILM_MIN_COSINE <= row["quality"] <= 1.0001
        assert "throughput_bs32" not in row  # served on GPUs only: no CPU throughput
        entry = bentoml.models.get(row["tag"])
        assert entry.info.metadata["device"] == "cuda" and entry.info.metadata["source_tag"] == fp32["tag"]
    assert "float16-rounded" in fp16["quality_compute"] and bf16["quality_compute"] == "bfloat16 on CPU"
