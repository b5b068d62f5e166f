"""Build, measure and store the compressed variants of digits and MiniLM.

fp16 and bf16 are built everywhere (their quality is measured on CPU) but served only on GPUs:
their rows carry no CPU throughput. Quality on CPU: bf16 runs in bfloat16 (torch has fast CPU
bf16 matmuls); digits also runs in float16; MiniLM fp16 computes in fp32 from fp16-rounded
weights (the same weight rounding, activations not rounded), because torch 2.13's CPU fp16
kernels are slow: MiniLM in real fp16 encoded ~4x slower than fp32 on the 2-core machine (its
mean cosine to fp32 on 64 shipped sentences was 0.999999, so fp16 activations lose nothing).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from services.models.compress import (
    HALF_DTYPES,
    CastIO,
    apply_half,
    apply_int8,
    cast_recipe,
    fp16_rounded,
    linear_layer_names,
    make_permanent,
    prune_linear,
    quantize_recipe,
    sparsity_of,
)
from services.models.quality import (
    DIGITS_MAX_ACCURACY_DROP,
    MINILM_MIN_COSINE,
    Runner,
    digits_runner,
    embed,
    embedding_quality,
    embedding_runner,
    interleaved_throughput,
    rounded,
)
from services.models.store import DIGITS, MINILM, get_model, load_digits_net, model_name, save_digits
from services.models.variants import RECIPE_FILE, entry_device

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

BUILT_VARIANTS = ("int8", "pruned", "fp16", "bf16")
RECIPE_VARIANTS = ("int8", "fp16", "bf16")  # stored as a recipe applied to the fp32 weights
DIGITS_SPARSITY = 0.5
MINILM_SPARSITY = 0.1
COSINE_TARGET_MARGIN = 0.005
Row = dict[str, Any]
Progress = Callable[[str], None]


def _noop(_: str) -> None:
    return None


def _row(variant: str, metric: str, quality: float, floor: float, extra: dict[str, Any]) -> Row:
    return {
        "variant": variant,
        "quality_metric": metric,
        "quality": round(quality, 6),
        "floor": round(floor, 6),
        "eligible": bool(quality >= floor),
        **extra,
    }


def _attach_throughput(rows: dict[str, Row], figures: dict[str, dict[int, float]], threads: int) -> None:
    fp32 = rounded(figures["fp32"])
    for name, row in rows.items():
        if name in figures:
            row.update(rounded(figures[name]), threads=threads)
            row.update({f"fp32_{k}": v for k, v in fp32.items()})


def _cpu_throughput(
    rows: dict[str, Row],
    runners: dict[str, Runner],
    threads: int,
    repeats: int,
    progress: Progress,
    base: str,
) -> None:
    """Interleaved CPU throughput of fp32 and the CPU variants, into the rows. fp16 / bf16 run on
    GPUs only, so they are left out (and nothing is measured when fp32 would be alone)."""
    cpu = {name: run for name, run in runners.items() if name not in HALF_DTYPES}
    if len(cpu) < 2:
        return
    progress(f"{base}: measuring throughput (interleaved)")
    _attach_throughput(rows, interleaved_throughput(cpu, repeats=repeats, threads=threads), threads)


def _metadata(row: Row, source: bentoml.Model, **extra: Any) -> dict[str, Any]:
    return {**row, "source_tag": str(source.tag), "device": entry_device(str(row["variant"])), **extra}


# ---------------------------------------------------------------- digits


def _finetune_pruned(net: nn.Module, seed: int, epochs: int) -> None:
    """Fine-tune a masked (pruned) network; masks keep the pruned weights at zero."""
    from services.models.data import load_splits

    data = load_splits(seed=seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            optimizer.zero_grad()
            loss_fn(net(x[idx]), y[idx]).backward()
            optimizer.step()
    net.eval()


def build_digits(
    threads: int = 2,
    sparsity: float = DIGITS_SPARSITY,
    finetune_epochs: int = 5,
    repeats: int = 3,
    variants: Sequence[str] = BUILT_VARIANTS,
    progress: Progress = _noop,
) -> list[Row]:
    """Build int8, pruned, fp16 and bf16 digits from the latest fp32 entry, measure, store; rows
    (fp32 first). fp16 / bf16 accuracy is measured running in that dtype on CPU."""
    from services.models.data import load_splits
    from services.models.train import evaluate

    source = get_model(DIGITS)
    hyper = source.info.metadata.get("hyperparameters")
    seed = int(str(hyper.get("seed", 0))) if isinstance(hyper, dict) else 0
    data = load_splits(seed=seed)
    fp32 = load_digits_net(source)
    base = evaluate(fp32, data.x_test, data.y_test)
    floor = base.accuracy - DIGITS_MAX_ACCURACY_DROP
    nets: dict[str, nn.Module] = {"fp32": fp32}
    extra: dict[str, dict[str, Any]] = {"fp32": {}}
    recipes: dict[str, dict[str, Any]] = {}
    if "int8" in variants:
        recipes["int8"] = quantize_recipe(linear_layer_names(fp32))
        nets["int8"] = apply_int8(fp32, recipes["int8"])
        extra["int8"] = {"quantized_layers": len(recipes["int8"]["layers"])}
    for half in (v for v in variants if v in HALF_DTYPES):
        recipes[half] = cast_recipe(half)
        nets[half] = CastIO(apply_half(fp32, recipes[half]), HALF_DTYPES[half])
        extra[half] = {"quality_compute": f"{recipes[half]['dtype']} on CPU"}
    if "pruned" in variants:
        progress(f"digits: pruning {sparsity:.0%} and fine-tuning {finetune_epochs} epochs")
        pruned = copy.deepcopy(fp32)
        layers = prune_linear(pruned, sparsity, include_conv=True)
        _finetune_pruned(pruned, seed, finetune_epochs)
        make_permanent(pruned)
        nets["pruned"] = pruned
        extra["pruned"] = {
            "sparsity": round(sparsity_of(pruned, layers), 4),
            "finetune_epochs": finetune_epochs,
        }
    rows: dict[str, Row] = {}
    for name, net in nets.items():
        report = evaluate(net, data.x_test, data.y_test)
        figures = {
            "macro_f1": round(report.macro_f1, 6),
            "accuracy_drop": round(base.accuracy - report.accuracy, 6),
            **extra[name],
        }
        rows[name] = _row(name, "accuracy", report.accuracy, floor if name != "fp32" else 0.0, figures)
    runners = {n: digits_runner(net, data.x_test) for n, net in nets.items()}
    _cpu_throughput(rows, runners, threads, repeats, progress, DIGITS)
    for name in variants:
        meta = _metadata(rows[name], source, max_accuracy_drop=DIGITS_MAX_ACCURACY_DROP)
        if name in RECIPE_VARIANTS:
            rows[name]["tag"] = _save_recipe_entry(DIGITS, name, recipes[name], meta)
        else:
            arch = json.loads(Path(source.path_of("arch.json")).read_text())
            rows[name]["tag"] = save_digits(nets[name], arch, meta, variant=name)
    rows["fp32"]["tag"] = str(source.tag)
    return [rows["fp32"], *(rows[v] for v in variants)]


def _save_recipe_entry(base: str, variant: str, recipe: dict[str, Any], metadata: dict[str, Any]) -> str:
    with bentoml.models.create(
        model_name(base, variant), labels={"variant": variant}, metadata=metadata
    ) as model:
        Path(model.path_of(RECIPE_FILE)).write_text(json.dumps(recipe, indent=1))
    return str(model.tag)


# ---------------------------------------------------------------- MiniLM


def _mean_cosine(reference: Any, model: SentenceTransformer, sentences: Sequence[str]) -> float:
    from services.models.quality import cosine_rows

    return float(cosine_rows(reference, embed(model, sentences)).mean())


def select_int8_layers(
    fp32: SentenceTransformer,
    calibration: Sequence[str],
    target: float,
    progress: Progress = _noop,
) -> tuple[list[str], float, list[dict[str, Any]]]:
    """Greedy sensitivity pass: quantize every Linear per-channel; while the calibration mean
    cosine is below `target`, keep the next most damaging layer (measured alone) in fp32.

    Returns (quantized layers, calibration cosine, per-layer damage list).
    """
    reference = embed(fp32, calibration)
    layers = linear_layer_names(fp32)
    cosine = _mean_cosine(reference, apply_int8(fp32, quantize_recipe(layers)), calibration)
    progress(f"minilm: all {len(layers)} Linear layers int8 -> calibration cosine {cosine:.4f}")
    if cosine >= target:
        return layers, cosine, []
    damage = []
    for i, name in enumerate(layers):
        alone = _mean_cosine(reference, apply_int8(fp32, quantize_recipe([name])), calibration)
        damage.append({"layer": name, "damage": round(1.0 - alone, 6)})
        if i % 6 == 5:
            progress(f"minilm: sensitivity {i + 1}/{len(layers)}")
    damage.sort(key=lambda d: -float(str(d["damage"])))
    kept = list(layers)
    for entry in damage[: len(layers) // 2]:
        kept.remove(str(entry["layer"]))
        cosine = _mean_cosine(reference, apply_int8(fp32, quantize_recipe(kept)), calibration)
        progress(f"minilm: keep {entry['layer']} fp32 -> calibration cosine {cosine:.4f}")
        if cosine >= target:
            break
    return kept, cosine, damage


def _save_pruned_minilm(source: bentoml.Model, pruned: SentenceTransformer, metadata: dict[str, Any]) -> str:
    with bentoml.models.create(
        model_name(MINILM, "pruned"),
        labels={"task": "sentence-embedding", "variant": "pruned"},
        metadata=metadata,
    ) as model:
        dest = Path(model.path)
        for item in Path(source.path).rglob("*"):
            rel = item.relative_to(source.path)
            if item.is_file() and rel.parts[0] not in ("model.yaml",):
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(item, target)
        weights = dest / "model.safetensors"
        state = load_file(str(weights))
        fresh = pruned[0].auto_model.state_dict()  # type: ignore[union-attr]
        for key in state:
            if key in fresh:
                state[key] = fresh[key].detach().contiguous()
        save_file(state, str(weights), metadata={"format": "pt"})
    return str(model.tag)


def build_minilm(
    threads: int = 2,
    sparsity: float = MINILM_SPARSITY,
    repeats: int = 3,
    variants: Sequence[str] = BUILT_VARIANTS,
    calibration_every: int = 5,
    progress: Progress = _noop,
    sentences: Sequence[str] | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    cosine_target: float = MINILM_MIN_COSINE + COSINE_TARGET_MARGIN,
) -> list[Row]:
    """Build int8 (sensitivity-selected layers), pruned, fp16 and bf16 MiniLM, measure, store; rows."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _build_minilm(
            threads, sparsity, repeats, variants, calibration_every, progress, sentences, pairs, cosine_target
        )
    finally:
        torch.set_num_threads(before)


def _build_minilm(
    threads: int,
    sparsity: float,
    repeats: int,
    variants: Sequence[str],
    calibration_every: int,
    progress: Progress,
    sentences: Sequence[str] | None,
    pairs: Sequence[tuple[str, str]] | None,
    cosine_target: float,
) -> list[Row]:
    from services.models.minilm import load_sentence_model
    from services.models.sentences import load_paraphrase_pairs, load_sentences

    sentences = list(sentences if sentences is not None else load_sentences())
    pairs = list(pairs if pairs is not None else load_paraphrase_pairs())
    source = get_model(MINILM)
    fp32 = load_sentence_model(source.path, "cpu").eval()
    models: dict[str, SentenceTransformer] = {"fp32": fp32}
    extra: dict[str, dict[str, Any]] = {"fp32": {}}
    recipes: dict[str, dict[str, Any]] = {}
    if "int8" in variants:
        calibration = sentences[::calibration_every]
        layers, calib_cos, damage = select_int8_layers(fp32, calibration, cosine_target, progress)
        recipes["int8"] = quantize_recipe(layers)
        models["int8"] = apply_int8(fp32, recipes["int8"])
        all_layers = linear_layer_names(fp32)
        extra["int8"] = {
            "quantized_layers": len(layers),
            "fp32_layers": sorted(set(all_layers) - set(layers)),
            "calibration_cosine": round(calib_cos, 6),
            "calibration_sentences": len(calibration),
            "sensitivity": damage[:8],
        }
    if "pruned" in variants:
        pruned = copy.deepcopy(fp32)
        names = prune_linear(pruned, sparsity)
        make_permanent(pruned)
        models["pruned"] = pruned
        extra["pruned"] = {"sparsity": round(sparsity_of(pruned, names), 4)}
    if "bf16" in variants:
        recipes["bf16"] = cast_recipe("bf16")
        models["bf16"] = apply_half(fp32, recipes["bf16"])
        extra["bf16"] = {"quality_compute": "bfloat16 on CPU"}
    if "fp16" in variants:
        recipes["fp16"] = cast_recipe("fp16")
        models["fp16"] = fp16_rounded(fp32)
        extra["fp16"] = {"quality_compute": "float32 from float16-rounded weights on CPU"}
    rows: dict[str, Row] = {}
    for name, model in models.items():
        progress(f"minilm: quality of {name} on {len(sentences)} sentences, {len(pairs)} pairs")
        q = embedding_quality(fp32, model, sentences, pairs)
        floor = MINILM_MIN_COSINE if name != "fp32" else 0.0
        rows[name] = _row(name, "mean_cosine", q.mean_cosine, floor, {**q.as_metadata(), **extra[name]})
    bench = sentences[:128]
    runners = {n: embedding_runner(m, bench) for n, m in models.items()}
    _cpu_throughput(rows, runners, threads, repeats, progress, MINILM)
    for name in variants:
        meta = _metadata(rows[name], source, min_cosine_floor=MINILM_MIN_COSINE)
        if name in RECIPE_VARIANTS:
            rows[name]["tag"] = _save_recipe_entry(MINILM, name, recipes[name], meta)
        else:
            rows[name]["tag"] = _save_pruned_minilm(source, models[name], meta)
    rows["fp32"]["tag"] = str(source.tag)
    return [rows["fp32"], *(rows[v] for v in variants)]


def stored_rows(base: str) -> list[Row] | None:
    """Rows of the stored variants when all exist and were built from the latest fp32; else None."""
    from services.models.store import ModelNotFound

    source = get_model(base)
    rows: list[Row] = []
    for variant in BUILT_VARIANTS:
        try:
            entry = get_model(base, variant)
        except ModelNotFound:
            return None
        meta = dict(entry.info.metadata)
        if meta.get("source_tag") != str(source.tag):
            return None
        rows.append({**meta, "variant": variant, "tag": str(entry.tag)})
    first = rows[0]
    fp32: Row = {
        "variant": "fp32",
        "quality_metric": first.get("quality_metric"),
        "quality": first["quality"] + first.get("accuracy_drop", 0.0) if base == DIGITS else 1.0,
        "floor": 0.0,
        "eligible": True,
        "throughput_bs1": first.get("fp32_throughput_bs1"),
        "throughput_bs32": first.get("fp32_throughput_bs32"),
        "threads": first.get("threads"),
        "tag": str(source.tag),
    }
    return [fp32, *rows]
