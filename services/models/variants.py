"""Load a model variant for serving, behind the accuracy guard.

Variants are separate store entries (`digits-int8`, `minilm-pruned`, ...). `pruned` entries hold
dense pruned weights; `int8` entries hold a recipe and are re-quantized from their fp32 source
at load time. Every non-fp32 entry carries `quality`, `floor` and `eligible` in its metadata;
an entry that fails the guard is refused with VariantNotEligibleError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.models.store import DIGITS, MINILM, get_model, load_digits_net

if TYPE_CHECKING:
    import bentoml
    from sentence_transformers import SentenceTransformer
    from torch import nn

RECIPE_FILE = "recipe.json"
QUANTIZED = "int8"


class VariantNotEligibleError(RuntimeError):
    """The variant misses its quality floor (or was never measured) and must not be served."""


def _label(model: bentoml.Model, fallback: str) -> str:
    return str(model.info.labels.get("variant", fallback))


def check_eligible(model: bentoml.Model, base: str, variant: str) -> None:
    """Raise VariantNotEligibleError unless the entry's metadata says it meets its floor."""
    if variant == "fp32":
        return
    meta = model.info.metadata
    metric = str(meta.get("quality_metric", "quality"))
    quality, floor = meta.get("quality"), meta.get("floor")
    prefix = f"variant {variant!r} of {base} ({model.tag}) is not eligible"
    if not isinstance(quality, int | float) or not isinstance(floor, int | float):
        raise VariantNotEligibleError(f"{prefix}: no quality measurement; run `servetune variants {base}`")
    if quality < floor:
        raise VariantNotEligibleError(f"{prefix}: {metric} {quality:.4f} < floor {floor:.4f}")
    if meta.get("eligible") is not True:
        raise VariantNotEligibleError(
            f"{prefix}: marked ineligible ({metric} {quality:.4f}, floor {floor:.4f})"
        )


def read_recipe(model: bentoml.Model) -> dict[str, Any]:
    """The int8 recipe stored in a variant entry."""
    recipe: dict[str, Any] = json.loads(Path(model.path_of(RECIPE_FILE)).read_text())
    return recipe


def _source(model: bentoml.Model, base: str) -> bentoml.Model:
    source_tag = model.info.metadata.get("source_tag")
    if not isinstance(source_tag, str):
        raise ValueError(f"{model.tag} names no fp32 source_tag; rebuild it with `servetune variants`")
    return get_model(base, "fp32", source_tag)


def _cpu_only(variant: str, device: str) -> None:
    if variant == QUANTIZED and device != "cpu":
        raise ValueError(f"variant 'int8' runs on CPU only (dynamic quantization), not on {device}")


def load_digits_variant(
    variant: str = "fp32", tag: str | None = None, device: str = "cpu"
) -> tuple[str, nn.Module]:
    """(store tag, network in eval mode) for a digits variant; guarded."""
    model = get_model(DIGITS, variant, tag)
    kind = _label(model, variant)
    check_eligible(model, DIGITS, kind)
    _cpu_only(kind, device)
    if kind == QUANTIZED:
        from services.models.compress import apply_int8

        net = apply_int8(load_digits_net(_source(model, DIGITS)), read_recipe(model))
    else:
        net = load_digits_net(model)
    return str(model.tag), net.to(device).eval()


def load_minilm_variant(
    variant: str = "fp32", tag: str | None = None, device: str = "cpu"
) -> tuple[str, SentenceTransformer]:
    """(store tag, SentenceTransformer) for a MiniLM variant; guarded."""
    from services.models.minilm import load_sentence_model

    model = get_model(MINILM, variant, tag)
    kind = _label(model, variant)
    check_eligible(model, MINILM, kind)
    _cpu_only(kind, device)
    if kind == QUANTIZED:
        from services.models.compress import apply_int8

        st = load_sentence_model(_source(model, MINILM).path, "cpu")
        apply_int8(st, read_recipe(model), inplace=True)
        return str(model.tag), st.eval()
    return str(model.tag), load_sentence_model(model.path, device)
