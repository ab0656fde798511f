"""Checks applied to xlsa17 ``.mat`` contents on load; each failure is a one-line DatasetError.

Every message names the file and the key, says what is wrong and how to fix it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch

from gsmflow_nflows.data.errors import DatasetError, DatasetWarning

__all__ = [
    "MIN_CLASSES",
    "MIN_FEATURE_DIM",
    "check_class_count",
    "check_class_ids",
    "check_class_vectors",
    "check_disjoint",
    "check_feature_dim",
    "check_finite",
    "index_vector",
    "read_mat",
    "require_keys",
    "warn_identical_class_vectors",
]

#: Fewest classes (seen + unseen) a run can use: the relative-positioning encoder anchors the
#: class vectors on 3 classes.
MIN_CLASSES = 3
#: Smallest feature dimension: an affine coupling splits the features into two non-empty halves.
MIN_FEATURE_DIM = 2


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
        if isinstance(exc, NotImplementedError) and "7.3" in str(exc):  # an HDF5 file
            raise DatasetError(
                f"{path}: a MATLAB v7.3 (HDF5) file, which scipy cannot read; re-save it as v7: "
                f"in MATLAB save(file, ..., '-v7'), or in Python scipy.io.savemat(file, data)"
            ) from exc
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


def check_finite(
    values: np.ndarray, key: str, path: Path, *, dtype: type[np.floating] | None = None
) -> None:
    """Raise if an array holds NaN or infinity, or (with ``dtype``) values that overflow it.

    Args:
        values: The array.
        key: Its name in the file.
        path: The file.
        dtype: The floating type the values will be used in (e.g. ``np.float32``): a value
            finite here but beyond its range (``1e300`` for float32) would become inf.

    Example:
        >>> check_finite(np.zeros(3), "features", Path("res101.mat"), dtype=np.float32)
    """
    if not np.all(np.isfinite(values)):
        bad = np.argwhere(~np.isfinite(values))[0]
        raise DatasetError(
            f"{path}: key {key!r} contains NaN or inf (first at {tuple(int(i) for i in bad)}); "
            f"recompute or impute those entries"
        )
    if dtype is None or values.dtype.kind not in "iuf" or values.size == 0:
        return
    limit = float(np.finfo(dtype).max)
    if float(np.max(np.abs(values))) > limit:
        bad = np.argwhere(np.abs(values) > limit)[0]
        first = float(values[tuple(bad)])
        raise DatasetError(
            f"{path}: key {key!r} holds {first:.3g} (first at {tuple(int(i) for i in bad)}), "
            f"beyond the {np.dtype(dtype).name} range (|x| <= {limit:.3g}) it is used in, where "
            f"it would become inf; rescale {key!r} (e.g. divide it by its largest value)"
        )


def check_feature_dim(features: np.ndarray, key: str, path: Path) -> None:
    """Raise if features ``[N, D]`` have fewer than ``MIN_FEATURE_DIM`` dimensions.

    Args:
        features: The features, one row per image.
        key: Their name in the file.
        path: The file.

    Example:
        >>> check_feature_dim(np.zeros((4, 2)), "features", Path("res101.mat"))
    """
    dim = features.shape[1]
    if dim < MIN_FEATURE_DIM:
        raise DatasetError(
            f"{path}: key {key!r} has {dim}-d features (D x N = {dim} x {features.shape[0]}) "
            f"but the flow needs at least {MIN_FEATURE_DIM} dimensions per image; "
            f"store D x N features with D >= {MIN_FEATURE_DIM}"
        )


def check_class_vectors(att: np.ndarray, key: str, path: Path) -> None:
    """Raise if a class vector (a column of ``att``, A x C) cannot be L2-normalised in float32.

    The run compares class vectors by cosine similarity (its relative-positioning anchors), so
    each is divided by its float32 L2 norm: an all-zero column, or one whose norm underflows to
    0 or overflows to inf in float32, is refused.

    Args:
        att: The class vectors, one column per class, finite in float32.
        key: Its name in the file.
        path: The file.

    Example:
        >>> check_class_vectors(np.eye(3), "att", Path("att_splits.mat"))
    """
    if att.shape[1] == 0:
        return
    zero = np.flatnonzero(~np.any(att != 0, axis=0))
    if zero.size:
        c = int(zero[0]) + 1
        more = f" (and {zero.size - 1} more)" if zero.size > 1 else ""
        raise DatasetError(
            f"{path}: key {key!r} column {c} (class {c}, 1-based){more} is all zero, but every "
            f"class vector is L2-normalised; give that class its attributes or drop the class"
        )
    norms = torch.from_numpy(np.ascontiguousarray(att, dtype=np.float32)).norm(dim=0)
    bad = torch.nonzero((norms == 0) | ~torch.isfinite(norms)).flatten()
    if bad.numel():
        c = int(bad[0]) + 1
        raise DatasetError(
            f"{path}: key {key!r} column {c} (class {c}, 1-based) has an L2 norm of "
            f"{float(norms[c - 1]):g} in float32 (entries too small or too large), so it cannot "
            f"be normalised; rescale {key!r} (e.g. L2-normalise every column)"
        )


def check_class_count(
    num_seen: int, num_unseen: int, train_key: str, unseen_key: str, path: Path
) -> None:
    """Raise if the split uses fewer than ``MIN_CLASSES`` classes in all.

    Args:
        num_seen: Classes with images in ``train_key``.
        num_unseen: Classes with images in ``unseen_key``.
        train_key: Name of the training index vector (``"trainval_loc"``, ``"train_loc"``).
        unseen_key: Name of the unseen index vector (``"test_unseen_loc"``, ``"val_loc"``).
        path: The splits file.

    Example:
        >>> check_class_count(2, 1, "trainval_loc", "test_unseen_loc", Path("att_splits.mat"))
    """
    if num_seen + num_unseen < MIN_CLASSES:
        raise DatasetError(
            f"{path}: the split has only {num_seen + num_unseen} classes ({num_seen} seen in "
            f"{train_key!r}, {num_unseen} unseen in {unseen_key!r}) but GSMFlow needs at least "
            f"{MIN_CLASSES} (it anchors the class vectors on 3 classes); add classes to the split"
        )


def warn_identical_class_vectors(embeddings: np.ndarray, key: str, path: Path) -> None:
    """Warn (``DatasetWarning``, one line) when all class vectors ``[C, A]`` are identical.

    Args:
        embeddings: The class vectors of the classes the run uses, one row per class.
        key: Their name in the file.
        path: The file.

    Example:
        >>> warn_identical_class_vectors(np.eye(3), "att", Path("att_splits.mat"))
    """
    if embeddings.shape[0] > 1 and np.all(embeddings == embeddings[:1]):
        warnings.warn(
            f"{path}: all {embeddings.shape[0]} class vectors of {key!r} used by the split are "
            f"identical, so the classes cannot be told apart by their semantics and unseen "
            f"accuracy will be at chance; check that {key!r} is the dataset's class matrix",
            DatasetWarning,
            stacklevel=3,
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
