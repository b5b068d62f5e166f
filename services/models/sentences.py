"""The shipped English sentence set (load and quality checks) and its paraphrase pairs."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
SENTENCES_FILE = DATA_DIR / "sentences.txt"
PARAPHRASES_FILE = DATA_DIR / "paraphrases.jsonl"


@cache
def _sentences() -> tuple[str, ...]:
    lines = SENTENCES_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


def load_sentences() -> list[str]:
    """The shipped realistic sentences (5-40 words each, written for this project)."""
    return list(_sentences())


def load_paraphrase_pairs() -> list[tuple[str, str]]:
    """Pairs (a, b) where b says what a says in other words."""
    pairs = []
    for line in PARAPHRASES_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            pairs.append((str(row["a"]), str(row["b"])))
    return pairs


def length_stats(lengths: Sequence[int]) -> dict[str, float]:
    """min, p10, median, mean, p90, max of a list of lengths."""
    ordered = sorted(lengths)
    n = len(ordered)
    return {
        "count": n,
        "min": ordered[0],
        "p10": ordered[int(0.1 * (n - 1))],
        "median": float(statistics.median(ordered)),
        "mean": round(statistics.fmean(ordered), 2),
        "p90": ordered[int(0.9 * (n - 1))],
        "max": ordered[-1],
    }


def word_length_stats(sentences: Sequence[str]) -> dict[str, float]:
    """Length distribution in words."""
    return length_stats([len(s.split()) for s in sentences])


def token_length_stats(sentences: Sequence[str]) -> dict[str, float]:
    """Length distribution in MiniLM word pieces (special tokens included), offline tokenizer."""
    from tokenizers import Tokenizer

    from services.models.minilm import wheel_model_dir

    tokenizer = Tokenizer.from_file(str(wheel_model_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return length_stats([len(enc.ids) for enc in tokenizer.encode_batch(list(sentences))])
