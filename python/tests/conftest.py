"""Shared fixtures: the parity directory and small clustered data sets."""

import os
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def parity_dir() -> pathlib.Path:
    d = pathlib.Path(os.environ.get("PROXIMA_PARITY_DIR", ROOT.parent / "shared" / "parity"))
    if not d.is_dir():
        pytest.skip(f"parity directory {d} is absent (set PROXIMA_PARITY_DIR)")
    return d


def clustered(n: int, classes: int, dim: int, seed: int, spread: float = 0.6):
    """n points around `classes` random centres, labels 0..classes-1 (every class has >= 2 rows)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    x = centres[labels] + spread * rng.normal(size=(n, dim))
    return x.astype(np.float32), labels.astype(np.int64)
