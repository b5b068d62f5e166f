"""Load a model variant for serving, behind the accuracy guard.

Variants are separate store entries (`digits-int8`, `minilm-pruned`, ...). `pruned` entries hold
dense pruned weights; `int8`, `fp16` and `bf16` entries hold a recipe and are re-quantized or
cast from their fp32 source at load time. Every non-fp32 entry carries `quality`, `floor`,
`eligible` and `device` ("cpu", "cuda" or "any") in its metadata; an entry that fails the guard
is refused with VariantNotEligibleError, one that cannot run on the worker's device (int8 on a
GPU, fp16 / bf16 on a CPU) with VariantDeviceError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.knobs import VARIANT_DEVICES, DeviceKind, variant_runs_on
from services.models.store import DIGITS, MINILM, ModelNotFound, get_model, load_digits_net

if TYPE_CHECKING:
    import bentoml
    import torch
    from sentence_transformers import SentenceTransformer
    from torch import nn

RECIPE_FILE = "recipe.json"
QUANTIZED = "int8"
HALF = ("fp16", "bf16")
ANY_DEVICE = "any"
_BOTH: frozenset[str] = frozenset({"cpu", "cuda"})
_WHY = {
    "int8": "torch's dynamic int8 quantization has CPU kernels only; serve it with gpus: 0",
    "fp16": "float16 weights are for GPUs (CPU fp16 kernels are slow); serve it with gpus >= 1",
    "bf16": "bfloat16 weights are for GPUs; serve it with gpus >= 1",
}


class VariantNotEligibleError(RuntimeError):
    """The variant misses its quality floor (or was never measured) and must not be served."""


class VariantDeviceError(VariantNotEligibleError):
    """The variant cannot run on this worker's device (int8: CPU only; fp16 / bf16: GPU only)."""


def device_kind(device: str) -> DeviceKind:
    """The kind ("cpu" or "cuda") of a torch device string: "cpu", "cuda", "cuda:1"."""
    if device == "cpu":
        return "cpu"
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        return "cuda"
    raise ValueError(f"device: {device!r} is not cpu, cuda or cuda:N")


def check_device(variant: str, device: str, base: str = "the model") -> None:
    """Raise VariantDeviceError, naming the variant and device, unless `variant` runs on `device`."""
    kind = device_kind(device)
    if variant_runs_on(variant, kind):
        return
    only = "GPU" if kind == "cpu" else "CPU"
    why = _WHY.get(variant, f"it is built for {only}s")
    raise VariantDeviceError(
        f"variant {variant!r} of {base} runs on {only} only, not on device {device!r}: {why}"
    )


def entry_device(variant: str) -> str:
    """The `device` metadata of a built variant: "cpu", "cuda" or "any"."""
    devices = VARIANT_DEVICES.get(variant, _BOTH)
    return next(iter(devices)) if len(devices) == 1 else ANY_DEVICE


def _devices_of(meta: dict[str, Any], variant: str) -> frozenset[str]:
    device = meta.get("device")
    if device == ANY_DEVICE:
        return _BOTH
    if device in _BOTH:
        return frozenset({str(device)})
    return frozenset(VARIANT_DEVICES.get(variant, _BOTH))  # an entry built before `device` existed


def stored_variant_devices(base: str) -> dict[str, frozenset[str]]:
    """The devices each variant of `base` in the store runs on ({"fp16": {"cuda"}, ...}); fp32
    is listed when stored. Eligibility is not checked here (see check_eligible)."""
    found: dict[str, frozenset[str]] = {}
    for variant in VARIANT_DEVICES:
        try:
            model = get_model(base, variant)
        except ModelNotFound:
            continue
        found[variant] = _BOTH if variant == "fp32" else _devices_of(dict(model.info.metadata), variant)
    return found


def model_dtype(module: nn.Module) -> str:
    """The dtype of the module's first floating parameter ("float16", ...; "float32" if none)."""
    for param in module.parameters():
        if param.is_floating_point():
            return str(param.dtype).removeprefix("torch.")
    return "float32"


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


def _half_dtype(model: bentoml.Model, kind: str) -> torch.dtype:
    from services.models.compress import HALF_DTYPES, recipe_dtype

    dtype = recipe_dtype(read_recipe(model))
    if dtype != HALF_DTYPES[kind]:
        raise ValueError(f"{model.tag}: recipe dtype {dtype} does not match variant {kind!r}")
    return dtype


def load_digits_variant(
    variant: str = "fp32", tag: str | None = None, device: str = "cpu"
) -> tuple[str, nn.Module]:
    """(store tag, network in eval mode on `device`) for a digits variant; guarded.

    An fp16 / bf16 network casts its float inputs to its dtype and returns float32 logits.
    """
    check_device(variant, device, DIGITS)
    model = get_model(DIGITS, variant, tag)
    kind = _label(model, variant)
    check_eligible(model, DIGITS, kind)
    check_device(kind, device, DIGITS)
    net: nn.Module
    if kind == QUANTIZED:
        from services.models.compress import apply_int8

        net = apply_int8(load_digits_net(_source(model, DIGITS)), read_recipe(model))
    elif kind in HALF:
        from services.models.compress import CastIO

        dtype = _half_dtype(model, kind)
        net = CastIO(load_digits_net(_source(model, DIGITS)).to(device=device, dtype=dtype), dtype)
    else:
        net = load_digits_net(model)
    return str(model.tag), net.to(device).eval()


def load_minilm_variant(
    variant: str = "fp32", tag: str | None = None, device: str = "cpu"
) -> tuple[str, SentenceTransformer]:
    """(store tag, SentenceTransformer on `device`) for a MiniLM variant; guarded. fp16 / bf16
    weights are cast from the fp32 source on the device (fp16 `encode` returns float16 numpy:
    callers cast to float32, as services/embedding.py does)."""
    from services.models.minilm import load_sentence_model

    check_device(variant, device, MINILM)
    model = get_model(MINILM, variant, tag)
    kind = _label(model, variant)
    check_eligible(model, MINILM, kind)
    check_device(kind, device, MINILM)
    if kind in HALF:
        dtype = _half_dtype(model, kind)
        st = load_sentence_model(_source(model, MINILM).path, device)
        return str(model.tag), st.to(dtype=dtype).eval()
    if kind == QUANTIZED:
        from services.models.compress import apply_int8

        st = load_sentence_model(_source(model, MINILM).path, "cpu")
        apply_int8(st, read_recipe(model), inplace=True)
        return str(model.tag), st.eval()
    return str(model.tag), load_sentence_model(model.path, device)
