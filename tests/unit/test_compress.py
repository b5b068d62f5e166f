"""Compression helpers, variant building and the accuracy guard (digits fast, MiniLM tiny)."""

from __future__ import annotations

import bentoml
import pytest
import torch
from torch import nn

from services.models.compress import apply_int8, linear_layer_names, pruned_copy, quantize_recipe, sparsity_of
from services.models.quality import MINILM_MIN_COSINE, cosine_rows, retrieval_accuracy
from services.models.store import save_digits
from services.models.variants import VariantNotEligibleError, check_eligible, load_digits_variant


def test_int8_recipe_quantizes_only_named_layers() -> None:
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    q = apply_int8(net, quantize_recipe(["2"]))
    assert type(q[0]) is nn.Linear
    assert "DynamicQuantizedLinear" in repr(q[2])
    x = torch.randn(5, 8)
    assert torch.allclose(q(x), net(x), atol=0.05)
    with pytest.raises(ValueError, match="lacks"):
        apply_int8(net, quantize_recipe(["nope"]))


def test_pruning_is_permanent_at_the_chosen_sparsity() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 4))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    pruned, names = pruned_copy(net, 0.6)
    assert names == linear_layer_names(net)
    assert abs(sparsity_of(pruned, names) - 0.6) < 0.02
    # the original is untouched (a random init may hold an exact zero: compare, do not count)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert set(pruned.state_dict()) == set(net.state_dict())  # no weight_orig / mask left


def test_retrieval_and_cosine() -> None:
    a = torch.eye(3).numpy()
    assert retrieval_accuracy(a, a) == 1.0
    assert retrieval_accuracy(a, a[[1, 0, 2]]) == pytest.approx(1 / 3)
    assert cosine_rows(a, a).tolist() == [1.0, 1.0, 1.0]


def test_digits_variants_build_measure_and_guard(digits_tag: str) -> None:
    from services.models.variantbuild import build_digits

    rows = build_digits(threads=1, finetune_epochs=2, repeats=1, variants=("int8", "pruned"))
    assert [r["variant"] for r in rows] == ["fp32", "int8", "pruned"]
    fp32, int8, pruned = rows
    for row in (int8, pruned):
        assert {"quality", "throughput_bs1", "throughput_bs32", "eligible", "floor"} <= set(row)
        assert row["floor"] == pytest.approx(fp32["quality"] - 0.01, abs=1e-6)
        assert row["eligible"] == (row["quality"] >= row["floor"])
        tag, net = load_digits_variant(row["variant"], row["tag"])
        assert tag == row["tag"]
        assert net(torch.rand(2, 64)).shape == (2, 10)
    assert pruned["sparsity"] == pytest.approx(0.5, abs=0.01)

    # A pruned entry forced below its floor is refused, with the figures in the message.
    model = bentoml.models.get(pruned["tag"])
    _, net = load_digits_variant("pruned", pruned["tag"])
    meta = {**model.info.metadata, "floor": pruned["quality"] + 0.05, "eligible": False}
    arch = {"arch": "cnn", "width": 16, "dropout": 0.1}
    forced = save_digits(net, arch, meta, variant="pruned")
    with pytest.raises(VariantNotEligibleError, match=r"accuracy 0\.\d{4} < floor"):
        load_digits_variant("pruned", forced)
    bentoml.models.delete(forced)  # the real pruned entry is "latest" again
    check_eligible(bentoml.models.get(pruned["tag"]), "digits", "pruned")  # the real one passes


def test_minilm_int8_on_a_handful_of_sentences(minilm_tag: str) -> None:
    from services.models.sentences import load_paraphrase_pairs, load_sentences
    from services.models.variantbuild import _save_recipe_entry, build_minilm
    from services.models.variants import load_minilm_variant, read_recipe

    rows = build_minilm(
        threads=2, repeats=1, variants=("int8",), calibration_every=1,
        sentences=load_sentences()[:16], pairs=load_paraphrase_pairs()[:6],
        cosine_target=0.9,  # all layers int8 at once: the sensitivity pass is covered by the CLI
    )  # fmt: skip
    int8 = rows[1]
    assert int8["variant"] == "int8" and int8["quality_metric"] == "mean_cosine"
    assert 0.9 < int8["quality"] <= 1.0
    assert int8["retrieval_fp32"] == 1.0
    assert int8["floor"] == MINILM_MIN_COSINE and int8["eligible"] == (int8["quality"] >= int8["floor"])
    meta = bentoml.models.get(int8["tag"]).info.metadata
    recipe = read_recipe(bentoml.models.get(int8["tag"]))
    # An entry below its floor is refused, with the figures in the message.
    weak = _save_recipe_entry("minilm", "int8", recipe, {**meta, "floor": int8["quality"] + 0.01})
    with pytest.raises(VariantNotEligibleError, match=r"mean_cosine 0\.\d{4} < floor"):
        load_minilm_variant("int8", weak)
    bentoml.models.delete(weak)
    # The recipe entry re-quantizes from the fp32 weights when it is loaded.
    tag = _save_recipe_entry("minilm", "int8", recipe, {**meta, "floor": 0.9, "eligible": True})
    _, model = load_minilm_variant("int8", tag)
    assert "DynamicQuantizedLinear" in repr(model[0].auto_model)
    assert model.encode(["hello world"]).shape == (1, 384)
