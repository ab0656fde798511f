"""The loader on every real att_splits.mat, with generated res101.mat of the right size.

The expected numbers are the xlsa17 proposed splits' statistics (Xian et al., "Zero-Shot
Learning - A Comprehensive Evaluation of the Good, the Bad and the Ugly", TPAMI 2019),
typed here independently of the package.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from gsmflow_nflows.data import KNOWN_DATASETS, dataset_status, load_xlsa17, make_synthetic_gzsl
from tests.data.conftest import read, shared_xlsa17

# folder, splits file: images, trainval, test seen, test unseen, seen classes, unseen classes, A
TABLE = {
    ("APY", "att"): (15339, 5932, 1483, 7924, 20, 12, 64),
    ("AWA1", "att"): (30475, 19832, 4958, 5685, 40, 10, 85),
    ("AWA2", "att"): (37322, 23527, 5882, 7913, 40, 10, 85),
    ("CUB", "att"): (11788, 7057, 1764, 2967, 150, 50, 312),
    ("CUB", "sent"): (11788, 7057, 1764, 2967, 150, 50, 1024),
    ("SUN", "att"): (14340, 10320, 2580, 1440, 645, 72, 102),
    ("FLO", "att"): (8189, 5631, 1403, 1155, 82, 20, 1024),
}
SHARED = shared_xlsa17()


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    if not SHARED.is_dir():
        pytest.skip(f"real xlsa17 split files not found at {SHARED} (set GSMFLOW_SHARED_DATA)")
    root = tmp_path_factory.mktemp("real")
    for folder, semantic in TABLE:
        source = SHARED / folder / f"{semantic}_splits.mat"
        if semantic != "att" or not source.is_file():
            continue
        # generate labels from a splits file that has train_loc/val_loc (CUB: sent_splits.mat)
        full = [p for p in sorted(source.parent.glob("*_splits.mat")) if "train_loc" in read(p)]
        generator_source = source if source in full or not full else full[0]
        seen_classes = None
        if folder == "APY":  # the real 20/12 class split
            names = [str(n[0][0]) for n in read(source)["allclasses_names"]]
            wanted = (SHARED / "APY" / "trainvalclasses.txt").read_text().split()
            seen_classes = [names.index(w) for w in wanted]
        n_seen = TABLE[(folder, semantic)][4]
        make_synthetic_gzsl(
            root / folder, att_splits=generator_source, num_seen=n_seen,
            seen_classes=seen_classes, feature_dim=4, seed=1, image_files=False,
        )  # fmt: skip
        for real in (SHARED / folder).glob("*_splits.mat"):  # the real split files, unchanged
            shutil.copy(real, root / folder / real.name)
    return root


@pytest.mark.parametrize(("folder", "semantic"), list(TABLE), ids=lambda v: str(v))
def test_counts_match_the_table(real_root, folder, semantic):
    if not (real_root / folder / f"{semantic}_splits.mat").is_file():
        pytest.skip(f"{folder}/{semantic}_splits.mat not in {SHARED}")
    images, trainval, test_seen, test_unseen, s, u, a = TABLE[(folder, semantic)]
    data = load_xlsa17(real_root, folder.lower(), semantic=semantic)
    assert read(real_root / folder / "res101.mat")["labels"].size == images
    got = (data.num_train, len(data.test_seen_labels), len(data.test_unseen_labels))
    assert got == (trainval, test_seen, test_unseen)
    assert (data.num_seen, data.num_unseen, data.embedding_dim) == (s, u, a)
    assert data.feature_dim == 4 and len(data.class_names) == s + u


def test_apy_seen_classes_are_the_official_ones(real_root):
    data = load_xlsa17(real_root, "apy")
    seen = {data.class_names[i] for i in data.seen_classes.tolist()}
    unseen = {data.class_names[i] for i in data.unseen_classes.tolist()}
    assert seen == set((SHARED / "APY" / "trainvalclasses.txt").read_text().split())
    assert unseen == set((SHARED / "APY" / "testclasses.txt").read_text().split())


@pytest.mark.parametrize(
    ("folder", "semantic"), [("APY", "att"), ("SUN", "att"), ("CUB", "sent"), ("FLO", "att")]
)
def test_val_split_uses_train_loc_and_val_loc(real_root, folder, semantic):
    spl = read(SHARED / folder / f"{semantic}_splits.mat")
    data = load_xlsa17(real_root, folder, split="val", semantic=semantic)
    assert data.num_train + len(data.test_seen_labels) == spl["train_loc"].size
    assert len(data.test_unseen_labels) == spl["val_loc"].size
    assert not set(data.seen_classes.tolist()) & set(data.unseen_classes.tolist())


def test_cub_att_without_train_loc_refuses_val_and_names_sent(real_root):
    with pytest.raises(ValueError, match=r"missing key 'train_loc'.*sent_splits\.mat"):
        load_xlsa17(real_root, "cub", split="val")


@pytest.mark.parametrize("name", ["apy", "sun", "flo"])
def test_status_of_correctly_sized_folders_is_valid(real_root, name):
    state, detail = dataset_status(KNOWN_DATASETS[name], real_root)
    assert state == "valid", detail


def test_status_reports_a_wrong_image_count(real_root, tmp_path):
    shutil.copytree(real_root / "APY", tmp_path / "APY")
    feats = np.zeros((2, 10), dtype=np.float32)
    import scipy.io

    scipy.io.savemat(
        str(tmp_path / "APY" / "res101.mat"), {"features": feats, "labels": np.ones((10, 1))}
    )
    state, detail = dataset_status(KNOWN_DATASETS["apy"], tmp_path)
    assert state == "invalid" and "10 images, expected 15339" in detail
