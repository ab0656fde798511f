"""load_xlsa17 on tiny generated files, checked against computations on the raw .mat contents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gsmflow_nflows.data import GZSLData, load_xlsa17
from tests.data.conftest import TINY, read, rewrite


def _raw(root):
    res, spl = read(root / "TOY" / "res101.mat"), read(root / "TOY" / "att_splits.mat")
    return res["features"].T.astype(np.float64), res["labels"].ravel() - 1, spl


def test_counts_labels_and_raw_features(tiny_root):
    x, y, spl = _raw(tiny_root)
    data = load_xlsa17(tiny_root, "TOY", preprocess=False)
    s, u = TINY["num_seen"], TINY["num_classes"] - TINY["num_seen"]
    assert (data.num_seen, data.num_unseen) == (s, u)
    assert data.num_train == s * TINY["train_per_class"]
    assert data.test_seen_features.shape == (s * TINY["test_seen_per_class"], TINY["feature_dim"])
    assert data.test_unseen_labels.shape == (u * TINY["test_unseen_per_class"],)
    for part, key in (("train", "trainval_loc"), ("test_seen", "test_seen_loc")):
        idx = spl[key].ravel() - 1
        feats, labels = getattr(data, f"{part}_features"), getattr(data, f"{part}_labels")
        np.testing.assert_allclose(feats.numpy(), x[idx], rtol=1e-6)
        assert data.seen_classes[labels].tolist() == y[idx].tolist()
    idx = spl["test_unseen_loc"].ravel() - 1
    assert data.unseen_classes[data.test_unseen_labels].tolist() == y[idx].tolist()
    assert data.seen_classes.tolist() == sorted(set(y[spl["trainval_loc"].ravel() - 1]))
    np.testing.assert_allclose(data.seen_embeddings.numpy(), spl["att"].T[data.seen_classes], 1e-6)
    np.testing.assert_allclose(
        data.unseen_embeddings.numpy(), spl["att"].T[data.unseen_classes], 1e-6
    )
    assert data.class_names == tuple(f"synthetic_class_{i:02d}" for i in range(1, 7))
    assert data.train_features.dtype == torch.float32 and data.train_labels.dtype == torch.int64


def test_minmax_fitted_on_training_features_only(tiny_root):
    x, _, spl = _raw(tiny_root)
    tr, ts = x[spl["trainval_loc"].ravel() - 1], x[spl["test_seen_loc"].ravel() - 1]
    lo, span = tr.min(0), tr.max(0) - tr.min(0)
    data = load_xlsa17(tiny_root, "TOY")
    np.testing.assert_allclose(data.train_features.numpy(), (tr - lo) / span, atol=1e-6)
    np.testing.assert_allclose(data.test_seen_features.numpy(), (ts - lo) / span, atol=1e-6)
    assert data.train_features.min() == 0 and data.train_features.max() == 1


@pytest.mark.parametrize("name", ["toy", "Toy", "TOY"])
def test_dataset_name_is_case_insensitive(tiny_root, name):
    assert load_xlsa17(tiny_root, name).name == "TOY"


def test_val_split_holds_out_a_slice_of_train_loc(tiny_root):
    x, y, spl = _raw(tiny_root)
    train_loc, val_loc = spl["train_loc"].ravel() - 1, spl["val_loc"].ravel() - 1
    data = load_xlsa17(tiny_root, "toy", split="val", preprocess=False)
    assert data.split == "val"
    assert data.seen_classes.tolist() == sorted(set(y[train_loc]))
    assert data.unseen_classes.tolist() == sorted(set(y[val_loc]))
    assert data.num_unseen == TINY["num_val_classes"]
    assert data.test_unseen_labels.numel() == val_loc.size
    for k, c in enumerate(data.seen_classes.tolist()):
        n = int((y[train_loc] == c).sum())
        held = int((data.test_seen_labels == k).sum())
        assert held == round(0.2 * n) and int((data.train_labels == k).sum()) == n - held
    # the union of train and held-out rows is exactly the train_loc rows
    got = np.concatenate([data.train_features.numpy(), data.test_seen_features.numpy()])
    want = x[train_loc].astype(np.float32)
    assert sorted(map(tuple, got)) == sorted(map(tuple, want))
    again = load_xlsa17(tiny_root, "toy", split="val", preprocess=False)
    assert torch.equal(again.test_seen_features, data.test_seen_features)
    other = load_xlsa17(tiny_root, "toy", split="val", preprocess=False, val_seed=5)
    assert not torch.equal(other.test_seen_features, data.test_seen_features)


def test_semantic_selects_another_splits_file(tiny_root):
    spl = read(tiny_root / "TOY" / "att_splits.mat")
    sent = np.random.default_rng(0).standard_normal((7, TINY["num_classes"]))
    keep = {k: v for k, v in spl.items() if k not in ("att", "allclasses_names", "original_att")}
    import scipy.io

    scipy.io.savemat(str(tiny_root / "TOY" / "sent_splits.mat"), {**keep, "att": sent})
    data = load_xlsa17(tiny_root, "TOY", semantic="sent")
    assert data.embedding_dim == 7
    np.testing.assert_allclose(data.seen_embeddings.numpy(), sent.T[data.seen_classes], 1e-6)
    # names come from att_splits.mat next to it
    assert data.class_names[0] == "synthetic_class_01"


def test_numbered_class_names_when_none_stored(tiny_root):
    rewrite(tiny_root / "TOY" / "att_splits.mat", drop=("allclasses_names",))
    data = load_xlsa17(tiny_root, "TOY")
    assert data.class_names == ("class_001", "class_002", "class_003", "class_004",
                                "class_005", "class_006")  # fmt: skip


def test_summary_names_the_sizes(tiny_root):
    text = load_xlsa17(tiny_root, "toy").summary()
    assert text == (
        "TOY (split=test): 6 classes (4 seen / 2 unseen), features 3-d, embeddings 5-d; "
        "train 24, test seen 12, test unseen 8"
    )
    assert "\n" not in text


def test_gzsldata_refuses_labels_out_of_range(tiny_root):
    data = load_xlsa17(tiny_root, "toy")
    fields = {k: getattr(data, k) for k in data.__dataclass_fields__}
    fields["train_labels"] = fields["train_labels"] + 10
    with pytest.raises(ValueError, match="train_labels must lie in 0..3"):
        GZSLData(**fields)
