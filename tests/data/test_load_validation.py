"""Load-time checks of what the run needs later: float32 range, class vectors, sizes, names.

Each case loaded without complaint before and failed only after training (or read outside the
data root); now it fails at load with one line naming the file and key.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from gsmflow_nflows.cli import main
from gsmflow_nflows.data import DatasetError, load_dataset, load_xlsa17, make_synthetic_gzsl
from gsmflow_nflows.data.errors import DatasetWarning
from tests.data.conftest import TINY, read, rewrite


def _load_error(root, name: str = "toy", **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        load_xlsa17(root, name, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def _res(root):
    return root / "TOY" / "res101.mat"


def _spl(root):
    return root / "TOY" / "att_splits.mat"


@pytest.mark.parametrize("big", [1e300, -1e300])
def test_features_beyond_float32_are_refused(tiny_root, big):
    feats = read(_res(tiny_root))["features"].astype(np.float64)
    image = read(_spl(tiny_root))["test_unseen_loc"][0, 0] - 1  # a test image: not scaled away
    feats[2, image] = big
    rewrite(_res(tiny_root), features=feats)
    for preprocess in (True, False):
        msg = _load_error(tiny_root, preprocess=preprocess)
        assert f"res101.mat: key 'features' holds {big:.3g} (first at ({image}, 2))" in msg
        assert "float32 range" in msg and "rescale 'features'" in msg


def test_class_vector_beyond_float32_is_refused(tiny_root):
    att = read(_spl(tiny_root))["att"].astype(np.float64)
    att[1, 4] = 1e300
    rewrite(_spl(tiny_root), att=att)
    msg = _load_error(tiny_root)
    assert "att_splits.mat: key 'att' holds 1e+300 (first at (1, 4))" in msg
    assert "float32 range" in msg


def test_all_zero_class_vector_is_refused(tiny_root):
    att = read(_spl(tiny_root))["att"]
    att[:, 2] = 0  # att is A x C: column 2 is class 3
    rewrite(_spl(tiny_root), att=att)
    msg = _load_error(tiny_root)
    assert "att_splits.mat: key 'att' column 3 (class 3, 1-based) is all zero" in msg
    assert "L2-normalised" in msg


def test_class_vector_whose_norm_underflows_float32_is_refused(tiny_root):
    att = read(_spl(tiny_root))["att"].astype(np.float64)
    att[:, 5] = 1e-50  # not zero in float64, zero after the float32 cast
    rewrite(_spl(tiny_root), att=att)
    msg = _load_error(tiny_root)
    assert "att_splits.mat: key 'att' column 6 (class 6, 1-based) has an L2 norm of 0" in msg


def test_one_dimensional_features_are_refused(tiny_root):
    feats = read(_res(tiny_root))["features"]
    rewrite(_res(tiny_root), features=feats[:1])
    msg = _load_error(tiny_root)
    assert "res101.mat: key 'features' has 1-d features (D x N = 1 x 44)" in msg
    assert "at least 2" in msg


def test_fewer_than_three_classes_are_refused(tmp_path):
    sizes = {**TINY, "num_classes": 2, "num_seen": 1}
    make_synthetic_gzsl(tmp_path / "TOY", seed=3, **sizes)
    msg = _load_error(tmp_path)
    assert "att_splits.mat: the split has only 2 classes (1 seen in 'trainval_loc', " in msg
    assert "1 unseen in 'test_unseen_loc')" in msg and "at least 3" in msg


def test_identical_class_vectors_warn_in_one_line(tiny_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)
        load_xlsa17(tiny_root, "toy")  # distinct vectors: no warning
    att = read(_spl(tiny_root))["att"]
    rewrite(_spl(tiny_root), att=np.repeat(att[:, :1], att.shape[1], axis=1))
    with pytest.warns(DatasetWarning) as record:
        data = load_xlsa17(tiny_root, "toy")
    assert data.num_seen == 4  # a warning only: the data loads
    (warning,) = record
    msg = str(warning.message)
    assert "att_splits.mat: all 6 class vectors of 'att' used by the split are identical" in msg
    assert "\n" not in msg and issubclass(warning.category, UserWarning)


def test_test_features_overflowing_float32_after_scaling_are_refused(tiny_root):
    feats = read(_res(tiny_root))["features"].astype(np.float64)
    spl = read(_spl(tiny_root))
    train = spl["trainval_loc"].ravel() - 1
    feats[0, train] = np.arange(train.size) % 2 * 1e-14  # a feature that barely varies
    feats[0, spl["test_unseen_loc"][0, 0] - 1] = 1e30  # finite in float32, 1e44 once scaled
    rewrite(_res(tiny_root), features=feats)
    msg = _load_error(tiny_root)
    assert "res101.mat: key 'features' of the test unseen images exceeds the float32 range" in msg
    assert "after the min-max scaling" in msg
    assert load_xlsa17(tiny_root, "toy", preprocess=False).num_unseen == 2


def test_matlab_v73_file_says_to_resave_as_v7(tiny_root):
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5"
    _res(tiny_root).write_bytes(text.ljust(116) + bytes(8) + b"\x00\x02IM" + bytes(512))
    msg = _load_error(tiny_root)
    assert "res101.mat: a MATLAB v7.3 (HDF5) file" in msg
    assert "save(file, ..., '-v7')" in msg and "h5py" not in msg


@pytest.mark.parametrize("name", ["..", ".", "../outside", "TOY/../..", "", ".hidden"])
def test_dataset_names_that_are_not_plain_folder_names_are_refused(tmp_path, name):
    # valid datasets just outside the data root, which "..", "../outside" would reach
    make_synthetic_gzsl(tmp_path, seed=3, **TINY)
    make_synthetic_gzsl(tmp_path / "outside", seed=3, **TINY)
    root = tmp_path / "root"
    make_synthetic_gzsl(root / "TOY", seed=3, **TINY)
    msg = _load_error(root, name)
    assert f"dataset must be a plain folder name such as 'apy' or 'MYDATA', got {name!r}" in msg
    with pytest.raises(DatasetError) as info:
        load_dataset(name, data_root=root)
    if name and "/" not in name:  # "" and names with a "/": refused as unknown datasets
        assert "plain folder name" in str(info.value)


def test_cli_dataset_dotdot_is_one_error_line(tmp_path):
    make_synthetic_gzsl(tmp_path / "root" / "TOY", seed=3, **TINY)
    out = tmp_path / "model.pt"
    result = CliRunner().invoke(
        main, ["train", "--dataset", "..", "--data-root", str(tmp_path / "root"),
               "--output", str(out)],
    )  # fmt: skip
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and not out.exists()
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("Error: dataset must be a plain folder name")
    )


def test_val_split_hint_speaks_to_python_and_command_line_users(tiny_root):
    rewrite(_spl(tiny_root), drop=("train_loc", "val_loc"))
    msg = _load_error(tiny_root, split="val")
    assert "split='test'" in msg and "protocol 'final'" in msg
