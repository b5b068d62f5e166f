"""Compression: int8 dynamic quantization of Linear layers, permanent magnitude pruning, and
fp16 / bf16 casts (half precision, for GPUs).

Eager-mode `torch.ao.quantization.quantize_dynamic` still works in torch 2.13 but warns that
it is deprecated (torchao is its successor); the warnings are silenced here, in one place.
A quantized model is never saved: its recipe (layer names, per-channel or not) is, and the
model is re-quantized deterministically from the fp32 weights at load time. A half-precision
variant is a recipe too (the dtype), cast from the fp32 weights at load time.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Any, TypeVar, cast

import torch
from torch import nn
from torch.nn.utils import prune

M = TypeVar("M", bound=nn.Module)


def linear_layer_names(model: nn.Module) -> list[str]:
    """Qualified names of every nn.Linear in `model`, in module order."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def quantize_recipe(layers: Iterable[str], per_channel: bool = True) -> dict[str, Any]:
    """A JSON-serialisable int8 recipe: which Linear layers, which weight scheme."""
    return {
        "method": "torch.ao.quantization.quantize_dynamic",
        "dtype": "qint8",
        "per_channel": per_channel,
        "layers": sorted(layers),
    }


def apply_int8(model: M, recipe: dict[str, Any], inplace: bool = False) -> M:
    """Dynamically quantize the recipe's Linear layers to int8 (CPU only)."""
    from torch.ao import quantization as tq

    qconfig = (
        tq.per_channel_dynamic_qconfig if recipe.get("per_channel", True) else tq.default_dynamic_qconfig
    )
    wanted = set(recipe["layers"])
    present = set(linear_layer_names(model))
    missing = wanted - present
    if missing:
        raise ValueError(f"int8 recipe names layers the model lacks: {sorted(missing)[:3]}")
    spec: dict[str, Any] = dict.fromkeys(sorted(wanted), qconfig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize.*deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        return cast(M, tq.quantize_dynamic(model, qconfig_spec=spec, dtype=torch.qint8, inplace=inplace))


def prune_linear(
    model: nn.Module,
    sparsity: float,
    layers: Iterable[str] | None = None,
    include_conv: bool = False,
) -> list[str]:
    """L1 magnitude-prune each layer's weight to `sparsity` (per layer), kept as a mask.

    Returns the pruned layer names; call `make_permanent` to fold the masks in.
    """
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must be in (0, 1), got {sparsity}")
    kinds: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d) if include_conv else (nn.Linear,)
    names = set(layers) if layers is not None else None
    pruned: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, kinds) and (names is None or name in names):
            prune.l1_unstructured(module, name="weight", amount=sparsity)
            pruned.append(name)
    return pruned


def make_permanent(model: nn.Module) -> None:
    """Fold every pruning mask into its weight (plain dense tensors with zeros remain)."""
    for module in model.modules():
        if prune.is_pruned(module) and hasattr(module, "weight_orig"):
            prune.remove(module, "weight")


def sparsity_of(model: nn.Module, layers: Iterable[str]) -> float:
    """Fraction of exactly-zero weights over the named layers."""
    modules = dict(model.named_modules())
    zeros = total = 0
    for name in layers:
        weight = modules[name].weight
        assert isinstance(weight, torch.Tensor)
        zeros += int((weight == 0).sum())
        total += weight.numel()
    return zeros / total if total else 0.0


def pruned_copy(model: M, sparsity: float, include_conv: bool = False) -> tuple[M, list[str]]:
    """A deep copy of `model` with permanent magnitude pruning of its Linear (and conv) layers."""
    clone = copy.deepcopy(model)
    names = prune_linear(clone, sparsity, include_conv=include_conv)
    make_permanent(clone)
    return clone, names


# The half-precision variants and their dtypes (the recipe stores the dtype's name).
HALF_DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16}
_DTYPE_NAMES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def cast_recipe(variant: str) -> dict[str, Any]:
    """A JSON-serialisable fp16 / bf16 recipe: cast every floating tensor to the dtype."""
    if variant not in HALF_DTYPES:
        raise ValueError(f"variant: {variant!r} is not a half-precision variant ({sorted(HALF_DTYPES)})")
    return {"method": "torch.nn.Module.to", "dtype": str(HALF_DTYPES[variant]).removeprefix("torch.")}


def recipe_dtype(recipe: dict[str, Any]) -> torch.dtype:
    """The dtype a cast recipe names, or ValueError naming the bad `dtype` field."""
    name = recipe.get("dtype")
    if not isinstance(name, str) or name not in _DTYPE_NAMES:
        raise ValueError(f"recipe dtype: {name!r} is not one of {sorted(_DTYPE_NAMES)}")
    return _DTYPE_NAMES[name]


def apply_half(model: M, recipe: dict[str, Any], inplace: bool = False) -> M:
    """The model with its floating weights cast to the recipe's dtype (a copy unless `inplace`)."""
    target = model if inplace else copy.deepcopy(model)
    return target.to(dtype=recipe_dtype(recipe))


def fp16_rounded(model: M) -> M:
    """A copy computing in fp32 from fp16-rounded weights (the weight rounding of fp16, without
    torch's slow CPU fp16 kernels; activations are not rounded)."""
    return copy.deepcopy(model).to(dtype=torch.float16).to(dtype=torch.float32)


class CastIO(nn.Module):
    """Runs `inner` in `dtype`: float inputs are cast to it, outputs come back as float32."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = inner
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(x.to(self.dtype))
        return out.float()
