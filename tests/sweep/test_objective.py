"""The search objective in this process, with a recording session instead of Tune (no Ray)."""

import json
import shutil
from contextlib import contextmanager

import pytest

import gsmflow_nflows.training.trainer as trainer_module
from gsmflow_nflows.data import registry
from gsmflow_nflows.sweep.adapter import trainval_preset
from gsmflow_nflows.sweep.objective import SearchSetup, validation_trial

OVERRIDES = {"training.lr": 2e-3, "evaluation.samples_per_class": 40}


class Interrupted(Exception):
    pass


class RecordingSession:
    """Keeps every report and a copy of its checkpoint folder; can stop after some reports."""

    def __init__(self, root, *, restored=None, stop_after=None):
        self.root, self._restored, self.stop_after = root, restored, stop_after
        self.reports, self.folders = [], []

    def report(self, metrics, folder):
        copy = self.root / f"checkpoint-{len(self.reports)}"
        shutil.copytree(folder, copy)
        self.reports.append(metrics)
        self.folders.append(copy)
        if self.stop_after is not None and len(self.reports) >= self.stop_after:
            raise Interrupted

    @contextmanager
    def restored(self):
        yield self._restored


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("digits"))
    # As run_sweep does: the preset's config from the trainval sizes, BEFORE the search.
    base = trainval_preset("digits", root, "smoke")
    return SearchSetup("digits", root, base.to_dict(), seed=0, threads=1, device="cpu")


@pytest.fixture
def splits_read(monkeypatch):
    """Every split loaded through load_dataset; reading ``test`` raises (as a search must not)."""
    splits = []
    real = registry.load_xlsa17

    def guarded(root, folder, **options):
        splits.append(options.get("split"))
        if options.get("split") == "test":
            raise AssertionError("the test split was read during the search")
        return real(root, folder, **options)

    monkeypatch.setattr(registry, "load_xlsa17", guarded)
    return splits


def test_the_objective_reads_only_the_validation_split(setup, splits_read, tmp_path):
    session = RecordingSession(tmp_path)
    last = validation_trial(OVERRIDES, setup, session)
    assert splits_read == ["val"]
    # smoke: 40 iterations on the validation split, evaluated at 20 and 40
    assert [report["iteration"] for report in session.reports] == [20, 40]
    assert last == session.reports[-1] and last["finished"] and last["total_iterations"] == 40
    evaluations = json.loads(last["evaluations"])
    assert last["best_H"] == max(item["H"] for item in evaluations)
    assert 0.0 < last["best_H"] <= 1.0
    # the guard is live: what the sweep does before the search would be caught here
    with pytest.raises(AssertionError, match="test split was read"):
        trainval_preset("digits", setup.data_root, "smoke")


def test_a_restored_trial_continues_from_its_checkpoint(setup, tmp_path, monkeypatch):
    steps = []
    real_step = trainer_module.train_step

    def counting_step(*args, **kwargs):
        steps.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", counting_step)
    whole = RecordingSession(tmp_path / "whole")
    (tmp_path / "whole").mkdir()
    validation_trial(OVERRIDES, setup, whole)
    assert len(steps) == 40

    (tmp_path / "first").mkdir()
    first = RecordingSession(tmp_path / "first", stop_after=1)
    with pytest.raises(Interrupted):
        validation_trial(OVERRIDES, setup, first)
    steps.clear()
    (tmp_path / "second").mkdir()
    second = RecordingSession(tmp_path / "second", restored=first.folders[0])
    validation_trial(OVERRIDES, setup, second)

    assert len(steps) == 20  # iterations 21..40 only: nothing before the checkpoint retrained
    assert [r["iteration"] for r in second.reports] == [40]
    assert first.reports + second.reports == whole.reports  # exactly the uninterrupted trial

    steps.clear()  # restored from its last checkpoint, a finished trial does nothing
    (tmp_path / "third").mkdir()
    third = RecordingSession(tmp_path / "third", restored=second.folders[-1])
    assert validation_trial(OVERRIDES, setup, third) is None
    assert steps == [] and third.reports == []
