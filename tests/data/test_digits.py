"""The built-in digits dataset, checked against scikit-learn's raw digits and a typed-out table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_digits

from gsmflow_nflows.cli.main import main
from gsmflow_nflows.data import (
    DIGITS_INFO,
    DatasetError,
    load_dataset,
    load_xlsa17,
    make_digits_gzsl,
)
from tests.data.conftest import read

#: Seven-segment display, typed out: rows are segments a..g, columns digits 0..9.
SEGMENTS = np.array(
    [
        # 0  1  2  3  4  5  6  7  8  9
        [1, 0, 1, 1, 0, 1, 1, 1, 1, 1],  # a (top)
        [1, 1, 1, 1, 1, 0, 0, 1, 1, 1],  # b (top right)
        [1, 1, 0, 1, 1, 1, 1, 1, 1, 1],  # c (bottom right)
        [1, 0, 1, 1, 0, 1, 1, 0, 1, 1],  # d (bottom)
        [1, 0, 1, 0, 0, 0, 1, 0, 1, 0],  # e (bottom left)
        [1, 0, 0, 0, 1, 1, 1, 0, 1, 1],  # f (top left)
        [0, 0, 1, 1, 1, 1, 1, 0, 1, 1],  # g (middle)
    ],
    dtype=np.float64,
)
SEEN, UNSEEN = [0, 1, 3, 4, 6, 8, 9], [2, 5, 7]
LOC_KEYS = ("trainval_loc", "train_loc", "val_loc", "test_seen_loc", "test_unseen_loc")


@pytest.fixture(scope="module")
def raw() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: pixel rows [1797, 64] and digit labels [1797]."""
    digits = load_digits()
    return digits.data.astype(np.float64), digits.target.astype(np.int64)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A data root with ``DIGITS/`` written by ``make_digits_gzsl`` (seed 0)."""
    base = tmp_path_factory.mktemp("digits")
    make_digits_gzsl(base / "DIGITS")
    return base


def _locs(root: Path) -> dict[str, np.ndarray]:
    spl = read(root / "DIGITS" / "att_splits.mat")
    return {k: spl[k].ravel() - 1 for k in LOC_KEYS}


def _minmax(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Min-max per column fitted on ``train`` (constant columns: shift only), then / max."""
    lo, hi = train.min(0), train.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    scaled = [(x - lo) / span for x in (train, *others)]
    return [x / scaled[0].max() for x in scaled]


def test_files_have_the_xlsa17_format(root, raw):
    x, y = raw
    res, spl = read(root / "DIGITS" / "res101.mat"), read(root / "DIGITS" / "att_splits.mat")
    assert res["features"].shape == (64, 1797) and res["features"].dtype == np.float32
    np.testing.assert_array_equal(res["features"].T, x)
    assert res["labels"].shape == (1797, 1)
    np.testing.assert_array_equal(res["labels"].ravel(), y + 1)
    np.testing.assert_array_equal(spl["original_att"], SEGMENTS)
    np.testing.assert_allclose(
        spl["att"], SEGMENTS / np.sqrt(SEGMENTS.sum(0, keepdims=True)), rtol=1e-12
    )
    names = [str(np.asarray(n).ravel()[0]) for n in spl["allclasses_names"].ravel()]
    assert spl["allclasses_names"].shape == (10, 1)
    assert names == [f"digit_{d}" for d in range(10)]
    for key in LOC_KEYS:
        v = spl[key]
        assert v.dtype == np.int32 and v.shape[1] == 1, key
        assert v.min() >= 1 and v.max() <= 1797, key
        assert np.all(np.diff(v.ravel()) > 0), f"{key} is not sorted and unique"


def test_splits_count_and_partition_the_digits(root, raw):
    _, y = raw
    locs = _locs(root)
    tv, ts, tu = locs["trainval_loc"], locs["test_seen_loc"], locs["test_unseen_loc"]
    assert len(tv) + len(ts) + len(tu) == 1797
    assert np.unique(np.concatenate([tv, ts, tu])).size == 1797  # disjoint, covering all
    np.testing.assert_array_equal(tu, np.flatnonzero(np.isin(y, UNSEEN)))
    assert sorted(set(y[tv])) == SEEN and sorted(set(y[ts])) == SEEN
    for c in SEEN:
        n = int((y == c).sum())
        assert int((y[ts] == c).sum()) == round(0.2 * n), c
        assert int((y[tv] == c).sum()) == n - round(0.2 * n), c
    info = DIGITS_INFO
    assert (info.num_classes, info.num_seen, info.num_unseen, info.attribute_dim) == (10, 7, 3, 7)
    assert (info.num_images, info.num_trainval, info.num_test_seen, info.num_test_unseen) == (
        y.size,
        len(tv),
        len(ts),
        len(tu),
    )
    assert info.url is None and info.folder == "DIGITS"


def test_val_locs_split_the_seen_images_by_class(root, raw):
    _, y = raw
    locs = _locs(root)
    train, val = locs["train_loc"], locs["val_loc"]
    seen_images = np.sort(np.concatenate([locs["trainval_loc"], locs["test_seen_loc"]]))
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), seen_images)
    train_classes, val_classes = set(y[train]), set(y[val])
    assert len(train_classes) == 5 and len(val_classes) == 2
    assert train_classes.isdisjoint(val_classes) and train_classes | val_classes == set(SEEN)
    np.testing.assert_array_equal(val, np.flatnonzero(np.isin(y, sorted(val_classes))))


def test_test_split_gives_scaled_digit_rows(root, raw):
    x, y = raw
    locs = _locs(root)
    data = load_xlsa17(root, "DIGITS")
    assert data.seen_classes.tolist() == SEEN and data.unseen_classes.tolist() == UNSEEN
    idx = {
        "train": locs["trainval_loc"],
        "test_seen": locs["test_seen_loc"],
        "test_unseen": locs["test_unseen_loc"],
    }
    expected = _minmax(*(x[idx[p]] for p in ("train", "test_seen", "test_unseen")))
    assert np.ptp(x[idx["train"]], axis=0).min() == 0  # constant pixels: shifted, not scaled
    for part, want in zip(("train", "test_seen", "test_unseen"), expected, strict=True):
        got = getattr(data, f"{part}_features").numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=part)
        classes = data.unseen_classes if part == "test_unseen" else data.seen_classes
        labels = classes[getattr(data, f"{part}_labels")].numpy()
        np.testing.assert_array_equal(labels, y[idx[part]], err_msg=part)
    np.testing.assert_allclose(
        data.seen_embeddings.numpy(), (SEGMENTS / np.linalg.norm(SEGMENTS, axis=0)).T[SEEN], 1e-6
    )
    np.testing.assert_allclose(
        data.unseen_embeddings.numpy(),
        (SEGMENTS / np.linalg.norm(SEGMENTS, axis=0)).T[UNSEEN],
        1e-6,
    )


def _rows(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[label, features...]`` rows in lexicographic order: a multiset to compare."""
    table = np.column_stack([labels, features])
    return table[np.lexsort(table.T[::-1])]


def test_val_split_loads_five_train_and_two_val_digits(root, raw):
    x, y = raw
    locs = _locs(root)
    plain = load_xlsa17(root, "DIGITS", split="val", preprocess=False)
    assert (plain.num_seen, plain.num_unseen) == (5, 2)
    seen, val = plain.seen_classes.tolist(), plain.unseen_classes.tolist()
    assert sorted(seen + val) == SEEN and set(val).isdisjoint(UNSEEN)
    assert set(seen) == set(y[locs["train_loc"]]) and set(val) == set(y[locs["val_loc"]])
    # train + held-out seen images are exactly the train_loc images, val the val_loc ones
    train_y = plain.seen_classes[plain.train_labels].numpy()
    held_y = plain.seen_classes[plain.test_seen_labels].numpy()
    got = _rows(
        np.concatenate([plain.train_features.numpy(), plain.test_seen_features.numpy()]),
        np.concatenate([train_y, held_y]),
    )
    np.testing.assert_array_equal(got, _rows(x[locs["train_loc"]], y[locs["train_loc"]]))
    np.testing.assert_array_equal(plain.test_unseen_features.numpy(), x[locs["val_loc"]])
    for c in seen:
        assert int((held_y == c).sum()) == round(0.2 * int((y[locs["train_loc"]] == c).sum()))
    scaled = load_xlsa17(root, "DIGITS", split="val")
    parts = ("train", "test_seen", "test_unseen")
    expected = _minmax(*(getattr(plain, f"{p}_features").numpy().astype(np.float64) for p in parts))
    for part, want in zip(parts, expected, strict=True):
        got = getattr(scaled, f"{part}_features").numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=part)


def test_deterministic_by_seed(tmp_path):
    for name, seed in (("A", 0), ("B", 0), ("C", 1)):
        make_digits_gzsl(tmp_path / name, seed=seed)
    for file in ("res101.mat", "att_splits.mat"):
        a, b = read(tmp_path / "A" / file), read(tmp_path / "B" / file)
        assert a.keys() == b.keys()
        for key in a:
            if a[key].dtype == object:
                assert [str(v.ravel()[0]) for v in a[key].ravel()] == [
                    str(v.ravel()[0]) for v in b[key].ravel()
                ]
            else:
                assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key
    a, c = read(tmp_path / "A" / "att_splits.mat"), read(tmp_path / "C" / "att_splits.mat")
    assert not np.array_equal(a["test_seen_loc"], c["test_seen_loc"])
    assert np.array_equal(a["test_unseen_loc"], c["test_unseen_loc"])  # unseen digits are fixed


def test_builtin_digits_is_generated_once_and_reused(tmp_path):
    data = load_dataset("digits", data_root=tmp_path)
    assert data.name == "DIGITS" and (data.num_seen, data.num_unseen) == (7, 3)
    assert (data.feature_dim, data.embedding_dim) == (64, 7)
    sizes = (data.num_train, len(data.test_seen_labels), len(data.test_unseen_labels))
    assert sizes == (DIGITS_INFO.num_trainval, DIGITS_INFO.num_test_seen, 538)
    stamps = {
        f: (tmp_path / "DIGITS" / f).stat().st_mtime_ns for f in ("res101.mat", "att_splits.mat")
    }
    again = load_dataset("DIGITS", data_root=tmp_path, split="val")
    assert {f: (tmp_path / "DIGITS" / f).stat().st_mtime_ns for f in stamps} == stamps
    assert again.split == "val" and [p.name for p in tmp_path.iterdir()] == ["DIGITS"]


def test_digits_is_listed_and_named_in_errors(tmp_path):
    table = CliRunner().invoke(main, ["datasets", "--root", str(tmp_path)])
    assert table.exit_code == 0, table.output
    lines = {line.split()[0]: line for line in table.stdout.splitlines() if line[:1].isalpha()}
    assert lines["digits"].split()[1:] == [
        "10",
        "7/3",
        "7",
        "1797",
        "1007",
        "252",
        "538",
        "on",
        "demand",
    ]
    assert "note digits: real handwritten digits from scikit-learn" in table.stdout
    with pytest.raises(DatasetError, match=r"not one of .*synthetic, digits"):
        load_dataset("nosuch", data_root=tmp_path)


def test_a_cached_folder_made_by_other_settings_is_regenerated(tmp_path):
    """A folder from an older generator (no or another recipe) never stands for today's data."""
    from scipy.io import loadmat, savemat

    load_dataset("digits", data_root=tmp_path)
    folder = tmp_path / "DIGITS"
    stale = {k: v for k, v in loadmat(folder / "res101.mat").items() if not k.startswith("__")}
    stale["features"] = stale["features"] * 0 + 1.0  # other data under the same name
    savemat(folder / "res101.mat", stale)
    (folder / "GENERATED.json").unlink()  # as written by a version without recipes
    data = load_dataset("digits", data_root=tmp_path)
    assert float(data.train_features.std()) > 0.1  # regenerated, not the constant stale file
    assert (folder / "GENERATED.json").is_file()
    # and a folder stamped with another recipe is regenerated as well
    (folder / "GENERATED.json").write_text('{"generator": "make_digits_gzsl/0"}')
    savemat(folder / "res101.mat", stale)
    assert float(load_dataset("digits", data_root=tmp_path).train_features.std()) > 0.1
