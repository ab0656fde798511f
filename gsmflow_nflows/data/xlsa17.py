"""Reader of the xlsa17 format (Xian et al., "Zero-Shot Learning - the Good, the Bad and the Ugly").

One folder per dataset holds ``res101.mat`` (``features`` D x N, ``labels`` N x 1, 1-based) and
``<semantic>_splits.mat`` (``att`` A x C, ``allclasses_names`` C x 1, 1-based index vectors
``trainval_loc``, ``train_loc``, ``val_loc``, ``test_seen_loc``, ``test_unseen_loc``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from sklearn.preprocessing import MinMaxScaler

from gsmflow_nflows.data.errors import DatasetError
from gsmflow_nflows.data.types import GZSLData
from gsmflow_nflows.data.validation import (
    check_class_count,
    check_class_ids,
    check_class_vectors,
    check_disjoint,
    check_feature_dim,
    check_finite,
    index_vector,
    read_mat,
    require_keys,
    warn_identical_class_vectors,
)

__all__ = ["FEATURES_FILE", "find_dataset_dir", "load_xlsa17", "splits_file_name"]

FEATURES_FILE = "res101.mat"
_SPLITS = ("test", "val")
#: The dtype every array of the loaded dataset is used in (GZSLData holds float32 tensors).
_USE_DTYPE = np.float32
#: What a user of the validation split can do instead (a benchmark's protocol 'final' uses
#: the test split, unless calibrate=True).
_USE_TEST = "use the test split (split='test'; in a benchmark: protocol 'final', no calibrate)"


def splits_file_name(semantic: str) -> str:
    """File name of the class-embedding file for a semantic kind.

    Args:
        semantic: ``"att"`` (attributes), ``"sent"`` (CUB sentence embeddings) or any ``X``
            such that ``X_splits.mat`` exists in the dataset folder.

    Returns:
        ``f"{semantic}_splits.mat"``.

    Example:
        >>> splits_file_name("sent")
        'sent_splits.mat'
    """
    if not semantic or any(c in semantic for c in "/\\") or semantic.startswith("."):
        raise DatasetError(
            f"semantic must be a plain name such as 'att' or 'sent', got {semantic!r}"
        )
    return f"{semantic}_splits.mat"


def find_dataset_dir(root: str | Path, dataset: str) -> Path | None:
    """Find ``root/<dataset>`` case-insensitively (``apy`` finds ``APY/``).

    Args:
        root: Folder holding one sub-folder per dataset.
        dataset: Dataset name, any case: a plain folder name, never a path (no ``/``, ``\\``,
            ``..`` or leading ``.``), so that nothing outside ``root`` is read.

    Returns:
        The folder, or ``None`` when there is none.

    Raises:
        DatasetError: ``dataset`` is not a plain folder name.

    Example:
        >>> find_dataset_dir("~/.cache/gsmflow", "apy")  # doctest: +SKIP
        PosixPath('/home/me/.cache/gsmflow/APY')
    """
    if (
        not dataset
        or dataset.startswith(".")
        or any(c in dataset for c in "/\\\0")
        or Path(dataset).name != dataset
    ):
        raise DatasetError(
            f"dataset must be a plain folder name such as 'apy' or 'MYDATA', got {dataset!r}; "
            f"put the dataset's folder directly in the data root and pass its name"
        )
    root = Path(root).expanduser()
    exact = root / dataset
    if exact.is_dir():
        return exact
    if not root.is_dir():
        return None
    matches = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() == dataset.lower())
    return matches[0] if matches else None


@dataclass(frozen=True)
class _Raw:
    """Checked contents of the two files, 0-based, before the split is applied."""

    features: np.ndarray  # [N, D]
    labels: np.ndarray  # [N] 0-based class ids
    embeddings: np.ndarray  # [C, A]
    class_names: tuple[str, ...]
    locs: dict[str, np.ndarray]  # 0-based image indices
    splits_path: Path


def _class_names(mat: dict[str, Any], count: int, folder: Path, path: Path) -> tuple[str, ...]:
    """Names from ``allclasses_names``, else from ``att_splits.mat`` beside it, else numbered."""
    sources = [(mat, path)]
    att_path = folder / "att_splits.mat"
    if "allclasses_names" not in mat and att_path.is_file() and att_path != path:
        sources.append((read_mat(att_path, fix="re-download the dataset"), att_path))
    for source, src_path in sources:
        if "allclasses_names" not in source:
            continue
        names = np.asarray(source["allclasses_names"]).reshape(-1)
        if names.size != count:
            raise DatasetError(
                f"{src_path}: key 'allclasses_names' has {names.size} entries but 'att' of "
                f"{path.name} has {count} class columns; use files from the same dataset"
            )
        return tuple(str(np.asarray(n).reshape(-1)[0]) if np.size(n) else "" for n in names)
    return tuple(f"class_{i + 1:03d}" for i in range(count))


def _check_files(folder: Path, feat_path: Path, splits_path: Path) -> None:
    """Both files are there, or the error says what to copy where."""
    if not splits_path.is_file():
        others = sorted(p.name.removesuffix("_splits.mat") for p in folder.glob("*_splits.mat"))
        hint = (
            f"this folder has splits files for semantic {others} (the semantic= argument); "
            f"use one of them or copy the dataset's {splits_path.name} here"
            if others
            else "copy the dataset's att_splits.mat into this folder"
        )
        raise DatasetError(f"{splits_path}: file not found; {hint}")
    if not feat_path.is_file() and (folder / "data.mat").is_file():
        raise DatasetError(
            f"{feat_path}: file not found; the data.mat + label.mat variant is not supported, "
            f"use the xlsa17 files (res101.mat + att_splits.mat) of this dataset"
        )


def _read_splits(folder: Path, splits_path: Path, split: str) -> tuple[dict[str, Any], list[str]]:
    """The splits file's contents and the index-vector keys ``split`` uses, all present."""
    split_mat = read_mat(splits_path, fix="re-download the dataset")
    if split == "val":
        loc_keys = ["train_loc", "val_loc"]
    else:
        loc_keys = ["trainval_loc", "test_seen_loc", "test_unseen_loc"]
    alternatives = [
        p.name for p in sorted(folder.glob("*_splits.mat")) if p != splits_path and split == "val"
    ]
    loc_fix = (
        f"{_USE_TEST}, or a splits file that has it ({', '.join(alternatives)})"
        if alternatives
        else (_USE_TEST if split == "val" else "use the dataset's original splits file")
    )
    require_keys(split_mat, ("att",), splits_path, fix="use the dataset's original splits file")
    require_keys(split_mat, loc_keys, splits_path, fix=loc_fix)
    return split_mat, loc_keys


def _class_vectors(split_mat: dict[str, Any], splits_path: Path) -> np.ndarray:
    """The checked ``att`` matrix ``[A, C]``, one column per class of ``allclasses_names``."""
    att = np.asarray(split_mat["att"])
    if att.ndim != 2 or att.dtype.kind not in "iuf":
        raise DatasetError(
            f"{splits_path}: key 'att' must be a numeric A x C matrix, got {att.dtype} {att.shape}"
        )
    check_finite(att, "att", splits_path, dtype=_USE_DTYPE)
    check_class_vectors(att, "att", splits_path)
    num_classes = att.shape[1]
    if "allclasses_names" in split_mat:
        n_names = np.asarray(split_mat["allclasses_names"]).size
        if n_names != num_classes:
            transposed = (
                " (it looks transposed: store it as A x C)" if att.shape[0] == n_names else ""
            )
            raise DatasetError(
                f"{splits_path}: key 'att' has {num_classes} class columns but "
                f"'allclasses_names' lists {n_names} classes{transposed}; "
                f"the embedding must have one column per class"
            )
    return att


def _features(feat_mat: dict[str, Any], feat_path: Path, n: int) -> np.ndarray:
    """The checked ``features`` as ``[N, D]``, ``n`` the number of labels (D x N or N x D)."""
    features = np.asarray(feat_mat["features"])
    if features.ndim != 2 or features.dtype.kind not in "iuf":
        raise DatasetError(
            f"{feat_path}: key 'features' must be a numeric D x N matrix, "
            f"got {features.dtype} {features.shape}"
        )
    if features.shape[1] == n:
        features = features.T
    elif features.shape[0] != n:
        raise DatasetError(
            f"{feat_path}: key 'features' has shape {features.shape} but 'labels' has {n} "
            f"entries; features must be D x N with one column per label"
        )
    check_feature_dim(features, "features", feat_path)
    check_finite(features, "features", feat_path, dtype=_USE_DTYPE)
    return features


def _read_raw(folder: Path, semantic: str, split: str) -> _Raw:
    feat_path = folder / FEATURES_FILE
    splits_path = folder / splits_file_name(semantic)
    _check_files(folder, feat_path, splits_path)
    fix = f"copy the dataset's {FEATURES_FILE} into {folder} or run `gsmflow download`"
    feat_mat = read_mat(feat_path, fix=fix, variable_names=("features", "labels"))
    require_keys(feat_mat, ("features", "labels"), feat_path, fix="re-extract res101.mat")
    split_mat, loc_keys = _read_splits(folder, splits_path, split)
    att = _class_vectors(split_mat, splits_path)
    num_classes = att.shape[1]

    labels_raw = np.asarray(feat_mat["labels"]).reshape(-1)
    n = labels_raw.size
    features = _features(feat_mat, feat_path, n)
    labels = check_class_ids(labels_raw, num_classes, "labels", feat_path)

    what = f"the {n} images of {FEATURES_FILE}"
    locs = {k: index_vector(split_mat, k, splits_path, length=n, what=what) for k in loc_keys}
    names = _class_names(split_mat, num_classes, folder, splits_path)
    return _Raw(
        features=np.ascontiguousarray(features),
        labels=labels,
        embeddings=np.ascontiguousarray(att.T),
        class_names=names,
        locs=locs,
        splits_path=splits_path,
    )


def _val_seen_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over ``labels``: the per-class held-out slice used as validation-seen."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(labels.size, dtype=bool)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        if where.size < 2:
            continue
        k = min(max(int(round(where.size * fraction)), 1), where.size - 1)
        mask[rng.choice(where, size=k, replace=False)] = True
    return mask


def _minmax(
    train: np.ndarray, *others: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The reference preprocessing: MinMaxScaler fitted on training features, then / max.

    Returns the scaled arrays and ``(shift, scale)`` with ``scaled = (raw - shift) / scale``.
    """
    scaler = MinMaxScaler()
    out = [scaler.fit_transform(train)] + [
        scaler.transform(x) if len(x) else x.astype(np.float64) for x in others
    ]
    mx = out[0].max()
    if mx > 0:  # 1 unless every training column is constant; the reference divides anyway
        out = [x / mx for x in out]
    scale = 1.0 / scaler.scale_ * (mx if mx > 0 else 1.0)
    return out, scaler.data_min_.copy(), scale


def _map(labels: np.ndarray, classes: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.searchsorted(classes, labels).astype(np.int64))


def _as_f32(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


class _Split(NamedTuple):
    """0-based image indices of the three parts, and the keys the train and unseen ones name."""

    train: np.ndarray
    test_seen: np.ndarray
    test_unseen: np.ndarray
    train_key: str
    unseen_key: str


def _split_images(raw: _Raw, split: str, val_seen_fraction: float, val_seed: int) -> _Split:
    """The images of each part of ``split``, the index vectors checked disjoint."""
    path = raw.splits_path
    if split == "test":
        train_idx = raw.locs["trainval_loc"]
        seen_idx = raw.locs["test_seen_loc"]
        unseen_idx = raw.locs["test_unseen_loc"]
        check_disjoint(train_idx, seen_idx, "trainval_loc", "test_seen_loc", path)
        check_disjoint(train_idx, unseen_idx, "trainval_loc", "test_unseen_loc", path)
        check_disjoint(seen_idx, unseen_idx, "test_seen_loc", "test_unseen_loc", path)
        return _Split(train_idx, seen_idx, unseen_idx, "trainval_loc", "test_unseen_loc")
    pool = raw.locs["train_loc"]
    unseen_idx = raw.locs["val_loc"]
    check_disjoint(pool, unseen_idx, "train_loc", "val_loc", path)
    held = _val_seen_holdout(raw.labels[pool], val_seen_fraction, val_seed)
    return _Split(pool[~held], pool[held], unseen_idx, "train_loc", "val_loc")


def _split_classes(raw: _Raw, parts: _Split) -> tuple[np.ndarray, np.ndarray]:
    """Sorted seen and unseen class ids of the split, checked to form a GZSL problem."""
    path, labels = raw.splits_path, raw.labels
    seen = np.unique(labels[parts.train])
    unseen = np.unique(labels[parts.test_unseen])
    check_disjoint(seen, unseen, parts.train_key, parts.unseen_key, path, unit="classes")
    check_class_count(seen.size, unseen.size, parts.train_key, parts.unseen_key, path)
    used = raw.embeddings[np.concatenate([seen, unseen])].astype(_USE_DTYPE)
    warn_identical_class_vectors(used, "att", path)
    stray = np.setdiff1d(labels[parts.test_seen], seen)
    if stray.size:
        raise DatasetError(
            f"{path}: 'test_seen_loc' holds images of class {int(stray[0]) + 1} that has no "
            f"training image in {parts.train_key!r}; seen test classes must be training classes"
        )
    return seen, unseen


def _split_features(
    raw: _Raw, parts: _Split, preprocess: bool, feat_path: Path
) -> tuple[list[np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """Train, test-seen and test-unseen features in float64, min-max scaled if ``preprocess``,
    and the scaling's ``(shift, scale)`` (``None`` unscaled)."""
    images = (parts.train, parts.test_seen, parts.test_unseen)
    features = [raw.features[idx].astype(np.float64) for idx in images]
    if not preprocess:
        return features, None
    features, shift, scale = _minmax(*features)
    limit = float(np.finfo(_USE_DTYPE).max)
    for part, x in (("test seen", features[1]), ("test unseen", features[2])):
        if x.size and float(np.abs(x).max()) > limit:
            raise DatasetError(
                f"{feat_path}: key 'features' of the {part} images exceeds the "
                f"float32 range after the min-max scaling (some feature varies very little "
                f"in training, a lot in test); rescale the features (in Python, "
                f"preprocess=False loads them unscaled)"
            )
    return features, (shift, scale)


def load_xlsa17(
    root: str | Path,
    dataset: str,
    *,
    split: str = "test",
    semantic: str = "att",
    preprocess: bool = True,
    val_seen_fraction: float = 0.2,
    val_seed: int = 0,
) -> GZSLData:
    """Load one dataset in the xlsa17 format, check it and split it for GZSL.

    ``split="test"``: train on ``trainval_loc``; test on ``test_seen_loc`` and
    ``test_unseen_loc``; seen classes are those of ``trainval_loc``, unseen those of
    ``test_unseen_loc``.

    ``split="val"``: seen classes are those of ``train_loc``, the validation classes of
    ``val_loc`` play the unseen part. xlsa17 has no validation-seen images, so for every seen
    class a fraction ``val_seen_fraction`` (rounded, at least 1 and at most all but one image;
    classes with a single image keep it for training) of its ``train_loc`` images is held out,
    drawn without replacement by ``numpy.random.default_rng(val_seed)`` visiting classes in
    ascending id order; these form ``test_seen_*`` and the remaining images ``train_*``.

    Preprocessing (``preprocess=True``) is the reference's: a ``MinMaxScaler`` fitted on the
    training features only and applied to the test features, then all divided by the largest
    scaled training value (1 unless all training columns are constant). Test values may fall
    outside [0, 1]. Embeddings are used as stored.

    Args:
        root: Folder holding one sub-folder per dataset.
        dataset: Sub-folder name, case-insensitive (``"apy"`` finds ``APY/``).
        split: ``"test"`` or ``"val"``.
        semantic: Which ``<semantic>_splits.mat`` gives the class embeddings and splits:
            ``"att"`` (attributes) or e.g. ``"sent"`` (CUB's 1024-d sentence embeddings).
        preprocess: Apply the min-max scaling above; ``False`` keeps raw features.
        val_seen_fraction: Share of each seen class's ``train_loc`` images held out with
            ``split="val"``.
        val_seed: Seed of that hold-out draw.

    Returns:
        The dataset as CPU tensors (see ``GZSLData`` for label conventions).

    Raises:
        DatasetError: Missing folder, file or key; a dataset name that is not a plain folder
            name; malformed, out-of-range, 0-based, empty or overlapping index vectors; seen
            classes among unseen test images; feature/label count mismatch; embedding columns
            not matching the classes; features or class vectors that are NaN/inf or overflow
            float32 (also after the scaling); an all-zero class vector (or one whose L2 norm
            is 0 or inf in float32); features of fewer than 2 dimensions; fewer than 3
            classes in the split.

    Warns:
        DatasetWarning: All class vectors used by the split are identical.

    Example:
        >>> data = load_xlsa17("~/.cache/gsmflow", "apy")  # doctest: +SKIP
        >>> print(data.summary())  # doctest: +SKIP
        APY (split=test): 32 classes (20 seen / 12 unseen), features 2048-d, ...
    """
    if split not in _SPLITS:
        raise DatasetError(f"split must be 'test' or 'val', got {split!r}")
    if not 0.0 < val_seen_fraction < 1.0:
        raise DatasetError(f"val_seen_fraction must be in (0, 1), got {val_seen_fraction}")
    folder = find_dataset_dir(root, dataset)
    if folder is None:
        raise DatasetError(
            f"{Path(root).expanduser() / dataset}: dataset folder not found; "
            f"put the xlsa17 files (res101.mat, att_splits.mat) there or run `gsmflow download`"
        )
    raw = _read_raw(folder, semantic, split)
    parts = _split_images(raw, split, val_seen_fraction, val_seed)
    seen, unseen = _split_classes(raw, parts)
    (x_train, x_seen, x_unseen), scaling = _split_features(
        raw, parts, preprocess, folder / FEATURES_FILE
    )
    labels = raw.labels
    return GZSLData(
        name=folder.name,
        train_features=_as_f32(x_train),
        train_labels=_map(labels[parts.train], seen),
        test_seen_features=_as_f32(x_seen),
        test_seen_labels=_map(labels[parts.test_seen], seen),
        test_unseen_features=_as_f32(x_unseen),
        test_unseen_labels=_map(labels[parts.test_unseen], unseen),
        seen_classes=torch.from_numpy(seen.astype(np.int64)),
        unseen_classes=torch.from_numpy(unseen.astype(np.int64)),
        seen_embeddings=_as_f32(raw.embeddings[seen]),
        unseen_embeddings=_as_f32(raw.embeddings[unseen]),
        class_names=raw.class_names,
        split=split,
        feature_shift=None if scaling is None else torch.from_numpy(scaling[0]),
        feature_scale=None if scaling is None else torch.from_numpy(scaling[1]),
    )
