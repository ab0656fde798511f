"""Checks applied to xlsa17 ``.mat`` contents on load; each failure is a one-line DatasetError.

Every message names the file and the key, says what is wrong and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from gsmflow_nflows.data.errors import DatasetError

__all__ = [
    "check_class_ids",
    "check_disjoint",
    "check_finite",
    "index_vector",
    "read_mat",
    "require_keys",
]


def _short(path: Path) -> str:
    """``FOLDER/file.mat``: enough to find the file, short enough for one line."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def read_mat(
    path: Path, *, fix: str, variable_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Read a MATLAB v5 file with scipy, turning every failure into a DatasetError.

    Args:
        path: The ``.mat`` file.
        fix: What the user should do when the file is missing or unreadable.
        variable_names: Read only these variables (skips e.g. the slow ``image_files`` cells).

    Returns:
        The variables of the file (scipy's ``__header__``-style keys dropped).

    Example:
        >>> mat = read_mat(Path("APY/att_splits.mat"), fix="re-download APY")  # doctest: +SKIP
    """
    if not path.is_file():
        raise DatasetError(f"{path}: file not found; {fix}")
    try:
        names = list(variable_names) if variable_names is not None else None
        mat = scipy.io.loadmat(str(path), variable_names=names)
    except Exception as exc:  # scipy raises many types for truncated or foreign files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetError(f"{path}: not a readable MATLAB file ({reason}); {fix}") from exc
    return {k: v for k, v in mat.items() if not k.startswith("__")}


def require_keys(mat: dict[str, Any], keys: Iterable[str], path: Path, *, fix: str) -> None:
    """Raise if any of ``keys`` is absent from ``mat``.

    Args:
        mat: Variables read from ``path``.
        keys: Names that must be present.
        path: The file, for the message.
        fix: What the user should do.

    Example:
        >>> require_keys({"att": 1}, ["att"], Path("att_splits.mat"), fix="")
    """
    missing = [k for k in keys if k not in mat]
    if missing:
        present = ", ".join(sorted(mat)) or "none"
        raise DatasetError(f"{path}: missing key {missing[0]!r} (keys present: {present}); {fix}")


def index_vector(
    mat: dict[str, Any], key: str, path: Path, *, length: int, what: str
) -> np.ndarray:
    """Read a MATLAB 1-based index vector and return it 0-based, after checking it.

    Args:
        mat: Variables read from ``path``.
        key: Name of the vector (e.g. ``"trainval_loc"``).
        path: The file, for the message.
        length: The vector indexes ``1..length``.
        what: What it indexes, for the message (e.g. ``"the 15339 images of res101.mat"``).

    Returns:
        ``int64`` 0-based indices, shape ``[n]``.

    Example:
        >>> index_vector({"loc": np.array([[1], [3]])}, "loc", Path("a.mat"), length=3, what="x")
        array([0, 2])
    """
    raw = np.asarray(mat[key])
    if raw.size and (raw.dtype.kind not in "iuf" or (raw.ndim == 2 and min(raw.shape) != 1)):
        raise DatasetError(
            f"{path}: key {key!r} must be a vector of integer indices, got "
            f"{raw.dtype} {raw.shape}; save it as an n x 1 integer column"
        )
    values = raw.reshape(-1)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise DatasetError(
                f"{path}: key {key!r} holds non-integer indices; save whole 1-based image numbers"
            )
    values = values.astype(np.int64)
    if values.size == 0:
        raise DatasetError(f"{path}: key {key!r} is empty; it must list at least one image")
    if values.min() == 0:
        raise DatasetError(
            f"{path}: key {key!r} contains index 0 but xlsa17 indices are 1-based (MATLAB); "
            f"add 1 to every entry"
        )
    if values.min() < 0 or values.max() > length:
        bad = int(values.max()) if values.max() > length else int(values.min())
        raise DatasetError(
            f"{path}: key {key!r} contains index {bad}, outside 1..{length} ({what}); "
            f"the split file does not belong to these features"
        )
    if np.unique(values).size != values.size:
        raise DatasetError(
            f"{path}: key {key!r} lists some images more than once; keep each index once"
        )
    return values - 1


def check_disjoint(
    a: np.ndarray, b: np.ndarray, key_a: str, key_b: str, path: Path, *, unit: str = "images"
) -> None:
    """Raise if two index (or class) sets share an element.

    Args:
        a: First set (0-based).
        b: Second set (0-based).
        key_a: Name of the first, for the message.
        key_b: Name of the second, for the message.
        path: The file, for the message.
        unit: ``"images"`` or ``"classes"``.

    Example:
        >>> check_disjoint(np.array([0]), np.array([1]), "a", "b", Path("x.mat"))
    """
    common = np.intersect1d(a, b)
    if common.size:
        raise DatasetError(
            f"{path}: {common.size} {unit} appear in both {key_a!r} and {key_b!r} "
            f"(first: {int(common[0]) + 1}, 1-based); training and test {unit} must be disjoint"
        )


def check_finite(values: np.ndarray, key: str, path: Path) -> None:
    """Raise if an array holds NaN or infinity.

    Args:
        values: The array.
        key: Its name in the file.
        path: The file.

    Example:
        >>> check_finite(np.zeros(3), "features", Path("res101.mat"))
    """
    if not np.all(np.isfinite(values)):
        bad = np.argwhere(~np.isfinite(values))[0]
        raise DatasetError(
            f"{path}: key {key!r} contains NaN or inf (first at {tuple(int(i) for i in bad)}); "
            f"recompute or impute those entries"
        )


def check_class_ids(labels: np.ndarray, num_classes: int, key: str, path: Path) -> np.ndarray:
    """Check 1-based class labels against the class count and return them 0-based.

    Args:
        labels: Raw labels, any shape with one non-singleton axis.
        num_classes: Number of classes ``C`` (columns of ``att``).
        key: Name of the labels in the file.
        path: The file.

    Returns:
        ``int64`` 0-based labels ``[N]``.

    Example:
        >>> check_class_ids(np.array([[1], [2]]), 2, "labels", Path("res101.mat"))
        array([0, 1])
    """
    values = np.asarray(labels).reshape(-1)
    if values.dtype.kind not in "iuf" or (
        values.dtype.kind == "f" and np.any(values != np.round(values))
    ):
        raise DatasetError(f"{path}: key {key!r} must hold integer class ids 1..{num_classes}")
    values = values.astype(np.int64)
    if values.size and values.min() < 1:
        raise DatasetError(
            f"{path}: key {key!r} contains class id {int(values.min())} but labels are 1-based "
            f"(1..{num_classes}); add 1 to every label"
        )
    if values.size and values.max() > num_classes:
        raise DatasetError(
            f"{path}: key {key!r} contains class id {int(values.max())} but the split file "
            f"describes only {num_classes} classes; use the att_splits.mat of this dataset"
        )
    return values - 1
