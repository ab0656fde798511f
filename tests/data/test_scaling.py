"""The loader's min-max scaling is recorded, so features map back to the raw units."""

import dataclasses

import numpy as np
import pytest
import scipy.io
import torch

from gsmflow_nflows.data import load_dataset
from gsmflow_nflows.errors import DatasetError
from tests.tiny_gzsl import make_tiny


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("scaling"))


def _raw(root, key):
    """Raw features of the rows in ``key`` (1-based xlsa17 indices), read with scipy."""
    features = scipy.io.loadmat(root / "TINY" / "res101.mat")["features"].T.astype(np.float64)
    loc = scipy.io.loadmat(root / "TINY" / "att_splits.mat")[key].ravel() - 1
    return features[loc]


def test_unscale_recovers_the_raw_features(root):
    data = load_dataset("tiny", data_root=root)
    # min-max from the raw training rows, by hand: (x - min) / (max - min) / (overall max)
    raw_train = _raw(root, "trainval_loc")
    low, high = raw_train.min(0), raw_train.max(0)
    scaled = (raw_train - low) / np.where(high > low, high - low, 1.0)
    scaled /= scaled.max()
    np.testing.assert_allclose(data.train_features.numpy(), scaled, atol=1e-6)
    np.testing.assert_allclose(data.feature_shift.numpy(), low)
    back = data.unscale(data.test_unseen_features).numpy()
    np.testing.assert_allclose(back, _raw(root, "test_unseen_loc"), rtol=1e-5, atol=1e-5)


def test_unscaled_loading_records_no_scaling(root):
    data = load_dataset("tiny", data_root=root, preprocess=False)
    assert data.feature_shift is None and data.feature_scale is None
    assert torch.equal(data.unscale(data.train_features), data.train_features.double())


def test_the_scaling_does_not_change_the_fingerprint(root):
    data = load_dataset("tiny", data_root=root)
    plain = dataclasses.replace(data, feature_shift=None, feature_scale=None)
    assert data.fingerprint() == plain.fingerprint()


def test_scaling_of_the_wrong_shape_is_refused(root):
    data = load_dataset("tiny", data_root=root)
    with pytest.raises(DatasetError, match="feature_scale must have shape"):
        dataclasses.replace(data, feature_scale=torch.ones(3, dtype=torch.float64))
    with pytest.raises(DatasetError, match="together"):
        dataclasses.replace(data, feature_scale=None)
