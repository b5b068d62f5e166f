"""`servetune variants digits|embedding`: build missing compressed variants, show their quality table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tuner.commands.console import console, fail


def register(app: typer.Typer) -> None:
    app.command("variants")(variants)


def variants(
    model: Annotated[str, typer.Argument(help="digits or embedding (MiniLM)")],
    rebuild: Annotated[bool, typer.Option(help="rebuild and re-measure even if stored")] = False,
    threads: Annotated[int, typer.Option(min=1, max=256, help="torch threads for throughput")] = 2,
    sparsity: Annotated[
        float | None, typer.Option(help="pruning sparsity (default: digits 0.5, MiniLM 0.1)")
    ] = None,
    repeats: Annotated[int, typer.Option(min=1, max=20, help="interleaved throughput repeats")] = 3,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the rows as a JSON list")] = None,
) -> None:
    """Build int8, pruned, fp16 and bf16 variants next to the fp32 model; print quality, CPU
    throughput (not for fp16/bf16: they are served on GPUs only) and eligibility."""
    from core.registry import by_model_base, resolve, service_keys, service_spec

    spec = by_model_base(model) if model not in service_keys() else service_spec(model)
    if spec is None or spec.model_base is None or spec.variant_builder is None:
        with_variants = [k for k in service_keys() if service_spec(k).variant_builder]
        fail(f"model: {model!r} has no compressed variants; choose one of {with_variants}")
    base = spec.model_base
    if sparsity is not None and not 0.0 < sparsity < 1.0:
        fail(f"--sparsity: must be between 0 and 1 (exclusive), got {sparsity}")
    from services.models import variantbuild as vb
    from services.models.store import ModelNotFound

    try:
        rows = None if rebuild else vb.stored_rows(base)
        if rows is None:

            def say(msg: str) -> None:
                console.print(f"[dim]{msg}[/]")

            build = resolve(spec.variant_builder)
            options = {"sparsity": sparsity} if sparsity is not None else {}
            with console.status(f"building {model} variants (int8, pruned, fp16, bf16)"):
                rows = build(threads, repeats=repeats, progress=say, **options)
    except ModelNotFound as exc:
        fail(str(exc))
    console.print(variants_table(model, rows))
    if json_path is not None:
        json_path.write_text(json.dumps(rows, indent=1, default=str))
        console.print(f"wrote {len(rows)} rows to {json_path}")


def _ratio(row: dict[str, Any], key: str) -> str:
    ref = row.get(f"fp32_{key}")
    value = row.get(key)
    if not isinstance(ref, int | float) or not isinstance(value, int | float) or ref <= 0:
        return "1.00x" if row["variant"] == "fp32" else "-"
    return f"{value / ref:.2f}x"


def variants_table(model: str, rows: list[dict[str, Any]]) -> Table:
    """A Rich table of variant rows (quality vs fp32, throughput, ratios, eligibility)."""
    metric = str(rows[0].get("quality_metric", "quality"))
    threads = rows[0].get("threads", "?")
    table = Table(title=f"{model} variants (in-process, {threads} threads)")
    for name in ("variant", metric, "floor", "detail", "bs1 /s", "bs32 /s", "bs1 vs fp32", "bs32 vs fp32"):
        table.add_column(name, justify="left" if name in ("variant", "detail") else "right")
    table.add_column("eligible")
    for row in rows:
        detail = ""
        if "macro_f1" in row:
            detail = f"F1 {row['macro_f1']:.4f}"
        elif "retrieval_variant" in row:
            detail = f"min cos {row['min_cosine']:.3f}, retrieval {row['retrieval_variant']:.2f}"
        if "sparsity" in row:
            detail += f", sparsity {row['sparsity']:.2f}"
        if "quantized_layers" in row:
            detail += f", {row['quantized_layers']} int8 layers"
        table.add_row(
            str(row["variant"]),
            f"{row['quality']:.4f}",
            f"{row['floor']:.4f}" if row["variant"] != "fp32" else "-",
            detail.strip(", "),
            _throughput(row, "throughput_bs1"),
            _throughput(row, "throughput_bs32"),
            _ratio(row, "throughput_bs1"),
            _ratio(row, "throughput_bs32"),
            "[green]yes[/]" if row.get("eligible") else "[red]no[/]",
        )
    return table


def _throughput(row: dict[str, Any], key: str) -> str:
    """Items/s, or "GPU only" for a variant with no CPU throughput (fp16, bf16)."""
    value = row.get(key)
    return "GPU only" if not value else f"{value:.1f}"
