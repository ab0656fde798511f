"""Fixtures of the data tests: tiny generated datasets, helpers to break them, real split files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from gsmflow_nflows.data import make_synthetic_gzsl

#: Sizes of the tiny dataset (independent of the generator's defaults).
TINY = {
    "num_classes": 6,
    "num_seen": 4,
    "attribute_dim": 5,
    "feature_dim": 3,
    "train_per_class": 6,
    "test_seen_per_class": 3,
    "test_unseen_per_class": 4,
    "num_val_classes": 1,
}


def shared_xlsa17() -> Path:
    """The read-only folder of real att_splits.mat files, when the machine has one.

    ``$GSMFLOW_SHARED_DATA/xlsa17``, else ``shared/data/xlsa17`` beside the checkout; the
    tests that need it are skipped without it.
    """
    env = os.environ.get("GSMFLOW_SHARED_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    return (base / "xlsa17").resolve()


def read(path: Path) -> dict:
    return {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}


def rewrite(path: Path, drop: tuple[str, ...] = (), **changes: np.ndarray) -> None:
    """Re-save a .mat file without ``drop`` keys and with ``changes`` applied."""
    mat = read(path)
    for key in drop:
        del mat[key]
    mat.update(changes)
    scipy.io.savemat(str(path), mat)


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """A data root holding ``TOY/`` with tiny ``res101.mat`` + ``att_splits.mat``."""
    make_synthetic_gzsl(tmp_path / "TOY", seed=3, **TINY)
    return tmp_path
