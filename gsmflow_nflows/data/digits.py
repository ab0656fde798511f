"""A small real GZSL dataset without download: scikit-learn's handwritten digits.

The 1,797 8x8 images of ``sklearn.datasets.load_digits()`` (bundled with scikit-learn) are the
features (64 pixel values in 0..16); each digit's class embedding is its seven-segment display
encoding (segments ``a``-``g``). Digits 2, 5 and 7 are unseen. The dataset is written in the
xlsa17 format (``res101.mat`` + ``att_splits.mat``) so that ``load_xlsa17`` reads it like any
other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from gsmflow_nflows.data.synthetic import _cells, _col

__all__ = [
    "DIGITS_FOLDER",
    "DIGITS_NUM_VAL_CLASSES",
    "DIGITS_TEST_SEEN_FRACTION",
    "DIGITS_UNSEEN",
    "SEVEN_SEGMENTS",
    "make_digits_gzsl",
]

#: Folder of the built-in ``digits`` dataset in the data root.
DIGITS_FOLDER = "DIGITS"
#: The digits whose images are all unseen test images.
DIGITS_UNSEEN: tuple[int, ...] = (2, 5, 7)
#: Share of each seen digit's images kept for the seen test set (rounded per class).
DIGITS_TEST_SEEN_FRACTION = 0.2
#: Seen digits used as validation classes by ``train_loc`` / ``val_loc``.
DIGITS_NUM_VAL_CLASSES = 2
#: Lit segments of each digit 0..9 on a seven-segment display (segments ``a``..``g``).
SEVEN_SEGMENTS: tuple[str, ...] = (
    "abcdef",
    "bc",
    "abdeg",
    "abcdg",
    "bcfg",
    "acdfg",
    "acdefg",
    "abc",
    "abcdefg",
    "abcdfg",
)


def _segment_matrix() -> np.ndarray:
    """The binary 7 x 10 matrix: row = segment ``a``..``g``, column = digit 0..9."""
    table = np.zeros((7, len(SEVEN_SEGMENTS)), dtype=np.float64)
    for digit, lit in enumerate(SEVEN_SEGMENTS):
        table[["abcdefg".index(s) for s in lit], digit] = 1.0
    return table


def make_digits_gzsl(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Write scikit-learn's handwritten digits as a GZSL dataset in the xlsa17 format.

    ``res101.mat`` holds ``features`` (the 64 pixel values, float32, 64 x 1797) and ``labels``
    (1797 x 1, 1-based: class ``k + 1`` is digit ``k``); no ``image_files``.
    ``att_splits.mat`` holds ``att`` (7 x 10, the seven-segment encoding with every column
    L2-normalised as in xlsa17), ``original_att`` (the binary encoding), ``allclasses_names``
    (``digit_0`` .. ``digit_9``) and 1-based, sorted int32 column vectors:

    * ``test_unseen_loc``: every image of the unseen digits 2, 5 and 7;
    * ``test_seen_loc``: ``round(0.2 * n)`` of the ``n`` images of each seen digit, drawn
      without replacement by ``numpy.random.default_rng(seed)`` visiting the seen digits in
      ascending order; ``trainval_loc``: the other seen images;
    * ``val_loc`` / ``train_loc``: like the real files, a split of all seen images (trainval
      and test seen) by class: the same generator, after the draws above, picks 2 of the 7
      seen digits as validation classes (``val_loc``: their images), ``train_loc`` has the
      images of the other 5 (with ``seed=0``: validation digits 0 and 4).

    Args:
        out_dir: Dataset folder to write (created if needed; files overwritten).
        seed: The split is a deterministic function of this seed; the same seed writes
            identical arrays.

    Returns:
        ``out_dir`` as a Path.

    Example:
        >>> make_digits_gzsl("/tmp/data/DIGITS")  # doctest: +SKIP
        PosixPath('/tmp/data/DIGITS')
        >>> load_xlsa17("/tmp/data", "DIGITS").num_unseen  # doctest: +SKIP
        3
    """
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    features = np.asarray(digits.data, dtype=np.float32)  # [N, 64], values 0..16
    labels = np.asarray(digits.target, dtype=np.int64)  # digit = 0-based class id
    original = _segment_matrix()
    att = original / np.linalg.norm(original, axis=0, keepdims=True)
    num_classes = original.shape[1]
    unseen = np.array(DIGITS_UNSEEN, dtype=np.int64)
    seen = np.setdiff1d(np.arange(num_classes), unseen)

    rng = np.random.default_rng(seed)
    test_seen = np.zeros(labels.size, dtype=bool)
    for c in seen:
        where = np.flatnonzero(labels == c)
        k = int(round(DIGITS_TEST_SEEN_FRACTION * where.size))
        test_seen[rng.choice(where, size=k, replace=False)] = True
    val_classes = np.sort(rng.choice(seen, size=DIGITS_NUM_VAL_CLASSES, replace=False))
    is_seen = np.isin(labels, seen)
    is_val = np.isin(labels, val_classes)
    locs = {
        "trainval_loc": np.flatnonzero(is_seen & ~test_seen),
        "train_loc": np.flatnonzero(is_seen & ~is_val),
        "val_loc": np.flatnonzero(is_val),
        "test_seen_loc": np.flatnonzero(test_seen),
        "test_unseen_loc": np.flatnonzero(~is_seen),
    }

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    res101 = {"features": features.T, "labels": (labels + 1).astype(np.int32).reshape(-1, 1)}
    scipy.io.savemat(out / "res101.mat", res101)
    splits = {
        "att": att,
        "original_att": original,
        "allclasses_names": _cells([f"digit_{d}" for d in range(num_classes)]),
    }
    splits.update({k: _col(v) for k, v in locs.items()})
    scipy.io.savemat(out / "att_splits.mat", splits)
    return out
