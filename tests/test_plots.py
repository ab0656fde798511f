"""The plots: the t-SNE's points per class, the missing-extra error, no matplotlib on import."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from gsmflow_nflows import build_gsmflow
from gsmflow_nflows.errors import ConfigError
from gsmflow_nflows.plots import draw_curves, draw_tsne, tsne_points, unseen_tsne_points
from gsmflow_nflows.run_log import RunLogTables
from tests.tiny_gzsl import load_tiny, make_tiny


def _coded(counts, generated):
    """Features [class, generated, row]: each point says where it came from."""
    rows = [(c, i) for c, n in enumerate(counts) for i in range(n)]
    features = np.array([[c, float(generated), i] for c, i in rows], dtype=np.float32)
    return features, np.array([c for c, _ in rows])


def test_tsne_points_hold_at_most_per_class_of_each_kind_per_class():
    real, real_labels = _coded([5, 250, 0], generated=False)
    fake, fake_labels = _coded([300, 3, 40], generated=True)
    points = tsne_points(real, real_labels, fake, fake_labels, per_class=200,
                         class_names=("a", "b", "c"), seed=1)  # fmt: skip
    counts = {
        (c, g): int(((points.labels == c) & (points.generated == g)).sum())
        for c in range(3)
        for g in (False, True)
    }
    assert counts == {(0, False): 5, (0, True): 200, (1, False): 200, (1, True): 3,
                      (2, False): 0, (2, True): 40}  # fmt: skip
    # every point is what its label and flag say, and none is drawn twice
    assert np.array_equal(points.features[:, 0], points.labels)
    assert np.array_equal(points.features[:, 1].astype(bool), points.generated)
    keys = {tuple(row) for row in points.features.tolist()}
    assert len(keys) == len(points.features)
    again = tsne_points(real, real_labels, fake, fake_labels, per_class=200,
                        class_names=("a", "b", "c"), seed=1)  # fmt: skip
    assert np.array_equal(again.features, points.features)  # seeded


def test_unseen_tsne_points_generate_per_class_and_take_the_real_test_features(tmp_path):
    data = load_tiny(make_tiny(tmp_path))  # 2 unseen classes, 6 test images each
    torch.manual_seed(0)
    classes = torch.cat([data.seen_embeddings, data.unseen_embeddings])
    flow = build_gsmflow(data.feature_dim, classes, num_blocks=1, hidden_features=8,
                         semantic_features=4)  # fmt: skip
    points = unseen_tsne_points(flow, data, per_class=4, seed=3)
    assert points.class_names == tuple(data.class_names[int(c)] for c in data.unseen_classes)
    for index in range(data.num_unseen):
        real = points.features[(points.labels == index) & ~points.generated]
        assert (
            len(real) == 4
            and len(points.features[(points.labels == index) & points.generated]) == 4
        )
        test = data.test_unseen_features[data.test_unseen_labels == index].numpy()
        assert all(any(np.array_equal(row, t) for t in test) for row in real)
    one = unseen_tsne_points(flow, data, per_class=10, max_classes=1)
    assert set(one.labels.tolist()) == {0} and (~one.generated).sum() == 6  # all 6 real
    assert one.generated.sum() == 10


def test_drawing_without_matplotlib_names_the_extra(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails
    tables = RunLogTables(flow=[{"seed": 0, "split": "test", "iteration": 1, "nll": 1.0,
                                 "prototype": 0.0, "loss": 1.0, "lr": 0.1}],
                          evaluations=[], mining=[])  # fmt: skip
    with pytest.raises(ConfigError, match=r'pip install "gsmflow-nflows\[plot\]"'):
        draw_curves(tables)
    points = tsne_points(np.zeros((6, 2)), np.zeros(6, int), np.zeros((0, 2)), np.zeros(0, int),
                         per_class=6, class_names=("a",))  # fmt: skip
    with pytest.raises(ConfigError, match=r"gsmflow-nflows\[plot\]"):
        draw_tsne(points, np.zeros((6, 2)))


def test_the_package_never_imports_matplotlib_or_tensorboard_itself():
    """Every gsmflow_nflows module imported: none of them imports an extra's package.

    nflows 0.14 itself imports matplotlib.pyplot (nflows/nn/nde/made.py), so the
    check records who imports, rather than whether it was imported: and it sees
    nflows do it, which shows that it would see us.
    """
    script = textwrap.dedent(
        """
        import builtins, importlib, pkgutil
        importers = set()
        real = builtins.__import__
        def spy(name, globals=None, locals=None, fromlist=(), level=0):
            if name.split(".")[0] in ("matplotlib", "tensorboard") or (
                    name.startswith("torch.utils.tensorboard")):
                importers.add((globals or {}).get("__name__", "?"))
            return real(name, globals, locals, fromlist, level)
        builtins.__import__ = spy
        import gsmflow_nflows
        for module in pkgutil.walk_packages(gsmflow_nflows.__path__, "gsmflow_nflows."):
            importlib.import_module(module.name)
        print(sorted(importers))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)  # fmt: skip
    importers = eval(done.stdout.strip().splitlines()[-1])
    assert not [name for name in importers if name.startswith("gsmflow_nflows")], importers
    if "nflows.nn.nde.made" not in importers:  # an nflows without matplotlib: nothing to see
        pytest.skip("nflows does not import matplotlib here")
