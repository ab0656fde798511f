"""make_synthetic_gzsl: real format, determinism, learnable structure; built-in synthetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from gsmflow_nflows.data import SYNTHETIC_INFO, load_dataset, load_xlsa17, make_synthetic_gzsl
from tests.data.conftest import read

SMALL = {"num_classes": 10, "num_seen": 6, "attribute_dim": 12, "feature_dim": 32,
         "train_per_class": 30, "test_seen_per_class": 10, "test_unseen_per_class": 20}  # fmt: skip


def test_files_have_the_real_format(tmp_path):
    make_synthetic_gzsl(tmp_path / "S", **SMALL)
    res, spl = read(tmp_path / "S" / "res101.mat"), read(tmp_path / "S" / "att_splits.mat")
    n = 6 * 40 + 4 * 20
    assert res["features"].shape == (32, n) and res["labels"].shape == (n, 1)
    assert res["image_files"].shape == (n, 1)
    assert spl["att"].shape == (12, 10) and spl["allclasses_names"].shape == (10, 1)
    np.testing.assert_allclose(np.linalg.norm(spl["att"], axis=0), 1.0, rtol=1e-6)
    for key in ("trainval_loc", "train_loc", "val_loc", "test_seen_loc", "test_unseen_loc"):
        assert spl[key].shape[1] == 1 and spl[key].min() >= 1 and spl[key].max() <= n
    assert res["features"].min() >= 0  # ReLU-like, non-negative


def test_deterministic_by_seed(tmp_path):
    for name, seed in (("A", 1), ("B", 1), ("C", 2)):
        make_synthetic_gzsl(tmp_path / name, seed=seed, **SMALL)
    a, b, c = (read(tmp_path / n / "res101.mat")["features"] for n in "ABC")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    sa, sb = (read(tmp_path / n / "att_splits.mat") for n in "AB")
    assert all(np.array_equal(sa[k], sb[k]) for k in ("att", "trainval_loc", "val_loc"))


def test_structure_is_learnable_from_attributes(tmp_path):
    make_synthetic_gzsl(tmp_path / "S", num_classes=32, num_seen=20, feature_dim=256, seed=0)
    data = load_xlsa17(tmp_path, "S", preprocess=False)
    x, y = data.train_features.double(), data.train_labels
    means = torch.stack([x[y == k].mean(0) for k in range(data.num_seen)])
    # seen: nearest class mean is far above chance (1/20)
    pred = torch.cdist(data.test_seen_features.double(), means).argmin(1)
    assert (pred == data.test_seen_labels).double().mean() > 0.6
    # unseen: class means regressed from attributes on seen classes beat chance (1/12) clearly
    a, au = data.seen_embeddings.double(), data.unseen_embeddings.double()
    center = means.mean(0)
    w = torch.linalg.solve(
        a.T @ a + 0.1 * torch.eye(a.shape[1], dtype=a.dtype), a.T @ (means - center)
    )
    pred = torch.cdist(data.test_unseen_features.double(), au @ w + center).argmin(1)
    assert (pred == data.test_unseen_labels).double().mean() > 0.25


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    """A fresh data root and the built-in synthetic dataset, generated into it by this load."""
    root = tmp_path_factory.mktemp("builtin")
    assert not (root / "SYNTHETIC").exists()
    return root, load_dataset("synthetic", data_root=root)


def _per_class_accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[labels == k] == k) for k in np.unique(labels)]))


def test_builtin_synthetic_is_generated_once_and_reused(builtin):
    tmp_path, data = builtin
    assert data.name == "SYNTHETIC"
    assert (data.num_seen, data.num_unseen, data.embedding_dim, data.feature_dim) == (
        20,
        12,
        64,
        2048,
    )
    sizes = (data.num_train, len(data.test_seen_labels), len(data.test_unseen_labels))
    assert sizes == (20 * 100, 20 * 25, 12 * 60)
    info = SYNTHETIC_INFO
    assert (info.num_trainval, info.num_test_seen, info.num_test_unseen) == sizes
    assert info.num_images == sum(sizes) and (info.num_seen, info.num_unseen) == (20, 12)
    stamp = (tmp_path / "SYNTHETIC" / "res101.mat").stat().st_mtime_ns
    again = load_dataset("SYNTHETIC", data_root=tmp_path, split="val")
    assert (tmp_path / "SYNTHETIC" / "res101.mat").stat().st_mtime_ns == stamp
    assert again.split == "val" and [p.name for p in tmp_path.iterdir()] == ["SYNTHETIC"]


def test_builtin_synthetic_is_hard_but_learnable(builtin):
    _, data = builtin
    x, y = data.train_features.double().numpy(), data.train_labels.numpy()
    xs, ys = data.test_seen_features.double().numpy(), data.test_seen_labels.numpy()
    xu, yu = data.test_unseen_features.double().numpy(), data.test_unseen_labels.numpy()
    # seen classes overlap: a linear classifier is far from perfect, but far above chance (5%)
    clf = LogisticRegression(max_iter=1000).fit(x, y)
    seen_acc = 100 * _per_class_accuracy(clf.predict(xs), ys)
    assert 50 < seen_acc < 95, seen_acc
    # unseen: class means ridge-regressed from attributes beat chance (1/12) at least twice
    means = np.stack([x[y == k].mean(0) for k in range(data.num_seen)])
    a, au = data.seen_embeddings.double().numpy(), data.unseen_embeddings.double().numpy()
    center = means.mean(0)
    w = np.linalg.solve(a.T @ a + 0.1 * np.eye(a.shape[1]), a.T @ (means - center))
    predicted = au @ w + center
    dist = (xu**2).sum(1, keepdims=True) - 2 * xu @ predicted.T + (predicted**2).sum(1)
    unseen_acc = _per_class_accuracy(dist.argmin(1), yu)
    assert unseen_acc > 2 / data.num_unseen, unseen_acc
