"""Digits data: scikit-learn's bundled 8x8 digits, normalised and split with a fixed seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

PIXEL_MAX = 16.0
IMAGE_SIDE = 8
N_PIXELS = IMAGE_SIDE * IMAGE_SIDE
N_CLASSES = 10
CLASS_LABELS = [str(i) for i in range(N_CLASSES)]


@dataclass(frozen=True)
class DigitsSplits:
    """Normalised float32 images (N, 64) in [0, 1] with int64 labels, per split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def normalise(pixels: np.ndarray) -> np.ndarray:
    """Raw 0..16 intensities (any shape ending in 64 or 8x8) -> float32 (N, 64) in [0, 1]."""
    flat = np.asarray(pixels, dtype=np.float32).reshape(-1, N_PIXELS)
    return flat / PIXEL_MAX


def raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """The raw images (N, 64) with intensities 0..16 and their labels."""
    bunch = load_digits()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


def load_splits(seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15) -> DigitsSplits:
    """Stratified train/val/test split of the normalised digits."""
    x, y = raw_digits()
    x = normalise(x)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    val_share = val_fraction / (1.0 - test_fraction)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_share, stratify=y_rest, random_state=seed
    )
    return DigitsSplits(x_train, y_train, x_val, y_val, x_test, y_test)


def held_out_raw(seed: int = 0, test_fraction: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """The test split as raw 0..16 images: what a client would send to the service."""
    x, y = raw_digits()
    _, x_test, _, y_test = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    return x_test, y_test


def held_out_rows() -> list[list[float]]:
    """Held-out images as 64 raw intensities each (never seen in training): load-test rows."""
    images, _ = held_out_raw()
    return [[float(v) for v in row] for row in images.reshape(len(images), -1)]


def shift_augment(x: np.ndarray, rng: np.random.Generator, max_shift: int = 1) -> np.ndarray:
    """Shift each (N, 64) image by up to `max_shift` pixels in x and y, filling with zeros."""
    images = x.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    out = np.zeros_like(images)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(len(images), 2))
    for i, (dy, dx) in enumerate(shifts):
        src = images[i]
        ys = slice(max(0, dy), IMAGE_SIDE + min(0, dy))
        yd = slice(max(0, -dy), IMAGE_SIDE + min(0, -dy))
        xs = slice(max(0, dx), IMAGE_SIDE + min(0, dx))
        xd = slice(max(0, -dx), IMAGE_SIDE + min(0, -dx))
        out[i, ys, xs] = src[yd, xd]
    return out.reshape(-1, N_PIXELS)
