"""Every load-time check, triggered by a deliberately broken file: one line naming file and key."""

from __future__ import annotations

import numpy as np
import pytest

from gsmflow_nflows.data import DatasetError, load_dataset, load_xlsa17
from tests.data.conftest import read, rewrite


def _load_error(root, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        load_xlsa17(root, "toy", **kwargs)
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, ValueError)
    return message


def _res(root):
    return root / "TOY" / "res101.mat"


def _spl(root):
    return root / "TOY" / "att_splits.mat"


def test_missing_features_file(tiny_root):
    _res(tiny_root).unlink()
    msg = _load_error(tiny_root)
    assert "res101.mat: file not found" in msg and "gsmflow download" in msg


def test_missing_splits_file_lists_alternatives(tiny_root):
    _spl(tiny_root).rename(tiny_root / "TOY" / "sent_splits.mat")
    msg = _load_error(tiny_root)
    assert "att_splits.mat: file not found" in msg and "['sent']" in msg


def test_unreadable_mat_file(tiny_root):
    _res(tiny_root).write_bytes(b"this is not a MATLAB file at all" * 4)
    assert "res101.mat: not a readable MATLAB file" in _load_error(tiny_root)


def test_missing_feature_key(tiny_root):
    rewrite(_res(tiny_root), drop=("labels",))
    assert "res101.mat: missing key 'labels'" in _load_error(tiny_root)


def test_missing_split_key(tiny_root):
    rewrite(_spl(tiny_root), drop=("test_unseen_loc",))
    assert "att_splits.mat: missing key 'test_unseen_loc'" in _load_error(tiny_root)


def test_val_split_without_train_loc_says_what_to_do(tiny_root):
    rewrite(_spl(tiny_root), drop=("train_loc", "val_loc"))
    msg = _load_error(tiny_root, split="val")
    assert "missing key 'train_loc'" in msg and "split='test'" in msg
    load_xlsa17(tiny_root, "toy", split="test")  # the test split still loads


def test_index_out_of_range(tiny_root):
    loc = read(_spl(tiny_root))["trainval_loc"].astype(np.int64)
    loc[0, 0] = 99
    rewrite(_spl(tiny_root), trainval_loc=loc)
    msg = _load_error(tiny_root)
    assert "'trainval_loc' contains index 99, outside 1..44" in msg


def test_zero_based_index(tiny_root):
    loc = read(_spl(tiny_root))["test_seen_loc"].astype(np.int64) - 1
    loc = np.vstack([loc, [[0]]]) if loc.min() > 0 else loc
    rewrite(_spl(tiny_root), test_seen_loc=loc)
    msg = _load_error(tiny_root)
    assert "'test_seen_loc' contains index 0" in msg and "1-based" in msg


def test_train_test_overlap(tiny_root):
    spl = read(_spl(tiny_root))
    loc = np.vstack([spl["trainval_loc"], spl["test_seen_loc"][:2]])
    rewrite(_spl(tiny_root), trainval_loc=loc)
    msg = _load_error(tiny_root)
    assert "2 images appear in both 'trainval_loc' and 'test_seen_loc'" in msg


def test_seen_class_in_unseen_test(tiny_root):
    res, spl = read(_res(tiny_root)), read(_spl(tiny_root))
    labels = res["labels"].copy()
    seen_label = labels[spl["trainval_loc"][0, 0] - 1, 0]
    labels[spl["test_unseen_loc"][0, 0] - 1, 0] = seen_label
    rewrite(_res(tiny_root), labels=labels)
    msg = _load_error(tiny_root)
    assert "classes appear in both 'trainval_loc' and 'test_unseen_loc'" in msg
    assert f"first: {seen_label}" in msg


def test_feature_label_count_mismatch(tiny_root):
    feats = read(_res(tiny_root))["features"]
    rewrite(_res(tiny_root), features=feats[:, :-1])
    msg = _load_error(tiny_root)
    assert "res101.mat: key 'features' has shape (3, 43) but 'labels' has 44 entries" in msg


def test_embedding_columns_not_matching_classes(tiny_root):
    att = read(_spl(tiny_root))["att"]
    rewrite(_spl(tiny_root), att=att[:, :-1])
    msg = _load_error(tiny_root)
    assert "key 'att' has 5 class columns but 'allclasses_names' lists 6 classes" in msg


def test_labels_beyond_embedding_columns_without_names(tiny_root):
    att = read(_spl(tiny_root))["att"]
    rewrite(_spl(tiny_root), drop=("allclasses_names",), att=att[:, :-1])
    msg = _load_error(tiny_root)
    assert "res101.mat: key 'labels' contains class id 6" in msg and "only 5 classes" in msg


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features(tiny_root, bad):
    feats = read(_res(tiny_root))["features"].astype(np.float64)
    feats[1, 7] = bad
    rewrite(_res(tiny_root), features=feats)
    msg = _load_error(tiny_root)
    assert "res101.mat: key 'features' contains NaN or inf (first at (7, 1))" in msg


def test_missing_dataset_folder(tiny_root):
    with pytest.raises(DatasetError, match="dataset folder not found"):
        load_xlsa17(tiny_root, "nothere")


def test_data_mat_variant_is_refused_clearly(tiny_root):
    _res(tiny_root).unlink()
    (tiny_root / "TOY" / "data.mat").write_bytes(b"")
    assert "data.mat + label.mat variant is not supported" in _load_error(tiny_root)


def test_bad_split_name(tiny_root):
    assert "split must be 'test' or 'val'" in _load_error(tiny_root, split="train")


def test_load_dataset_unknown_name_lists_known(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset("imagenet", data_root=tmp_path)
    msg = str(info.value)
    assert "apy, awa1, awa2, cub, sun, flo, synthetic" in msg and "point data_root at" in msg


def test_load_dataset_known_but_absent_points_to_download(tmp_path):
    with pytest.raises(DatasetError, match=r"run `gsmflow download awa2 --root"):
        load_dataset("AWA2", data_root=tmp_path)


def test_load_dataset_user_folder(tiny_root):
    assert load_dataset("toy", data_root=tiny_root).num_seen == 4
