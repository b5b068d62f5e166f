"""Test session setup: a private BentoML store, filled once with the two models."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="servetune-test-home-"))
os.environ["BENTOML_HOME"] = str(_HOME)
os.environ["BENTOML_DO_NOT_TRACK"] = "True"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def bentoml_home() -> Path:
    return _HOME


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run torch on `threads` threads, then restore the count.

    The digits nets are tiny: on a busy 2-core machine two spinning OpenMP threads trained them
    ~10x slower than one.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def digits_tag() -> str:
    """A digits model trained with the default recipe, stored in the test store."""
    from services.models.pipeline import train_and_store
    from services.models.train import TrainConfig

    with torch_threads(1):
        return train_and_store(TrainConfig(epochs=25)).tag


@pytest.fixture(scope="session")
def minilm_tag() -> str:
    from services.models.minilm import import_minilm

    return import_minilm()


@pytest.fixture(scope="session")
def models_in_store(digits_tag: str, minilm_tag: str) -> Iterator[dict[str, str]]:
    yield {"digits": digits_tag, "embedding": minilm_tag}


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """User services register themselves; remove what a test added so others see the built-ins."""
    from core.registry import service_keys, unregister

    before = set(service_keys())
    yield
    for key in set(service_keys()) - before:
        unregister(key)
