"""BentoML model store: save and load the digits network and MiniLM, per variant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bentoml
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from services.models.nets import build_net

DIGITS = "digits"
MINILM = "minilm"
WEIGHTS_FILE = "weights.safetensors"
ARCH_FILE = "arch.json"


class ModelNotFound(RuntimeError):
    """The requested model or variant is not in the store."""


def model_name(base: str, variant: str) -> str:
    """Store name of a variant: the fp32 model keeps the base name, others get a suffix."""
    return base if variant == "fp32" else f"{base}-{variant}"


def get_model(base: str, variant: str = "fp32", tag: str | None = None) -> bentoml.Model:
    """The store entry for a variant (latest unless `tag` is given), or ModelNotFound."""
    wanted = tag or f"{model_name(base, variant)}:latest"
    try:
        return bentoml.models.get(wanted)
    except bentoml.exceptions.NotFound as exc:
        hint = "servetune train digits" if base == DIGITS else "servetune import-minilm"
        if variant != "fp32":
            hint = f"servetune variants {base}"
        raise ModelNotFound(f"model {wanted!r} is not in the BentoML store; run `{hint}`") from exc


def has_model(base: str, variant: str = "fp32") -> bool:
    try:
        get_model(base, variant)
    except ModelNotFound:
        return False
    return True


def save_digits(
    net: nn.Module,
    arch: dict[str, Any],
    metadata: dict[str, Any],
    labels: dict[str, str] | None = None,
    variant: str = "fp32",
) -> str:
    """Store a digits network as a safetensors state_dict plus its architecture; returns the tag."""
    with bentoml.models.create(
        model_name(DIGITS, variant),
        labels={"task": "digits-classification", "variant": variant, **(labels or {})},
        metadata=metadata,
    ) as model:
        state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
        save_file(state, model.path_of(WEIGHTS_FILE))
        Path(model.path_of(ARCH_FILE)).write_text(json.dumps(arch))
    return str(model.tag)


def load_digits_net(model: bentoml.Model) -> nn.Module:
    """Rebuild the network from the stored architecture and tensors (no pickle involved)."""
    arch = json.loads(Path(model.path_of(ARCH_FILE)).read_text())
    net = build_net(arch["arch"], int(arch["width"]), float(arch.get("dropout", 0.0)))
    state = load_file(model.path_of(WEIGHTS_FILE))
    net.load_state_dict(state)
    net.eval()
    return net


def load_torch_weights(path: str) -> dict[str, torch.Tensor]:
    """Load a plain tensor checkpoint safely (weights_only)."""
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    return dict(loaded)
