"""Calibrated stacking: the offset maximises validation H exactly and never reads test data."""

import dataclasses

import pytest
import torch
from torch import nn

from gsmflow_nflows.evaluation import predict
from gsmflow_nflows.evaluation.calibration import calibrated_predict, choose_calibration
from gsmflow_nflows.evaluation.metrics import gzsl_scores
from gsmflow_nflows.evaluation.protocols import run_protocol
from tests.tiny_gzsl import load_tiny, make_tiny, tiny_config


class _Fixed(nn.Module):
    """A 'classifier' that returns precomputed scores for row-index features."""

    def __init__(self, scores):
        super().__init__()
        self.scores = scores

    def forward(self, inputs):
        return self.scores[inputs[:, 0].long()]


def _brute_force_best_h(scores, seen_rows, seen_labels, unseen_rows, unseen_labels, num_seen):
    best = -1.0
    for offset in torch.linspace(-6, 6, 4801).tolist():  # a fine grid, typed independently
        shifted = scores.clone()
        shifted[:, :num_seen] -= offset
        pred = shifted.argmax(1)
        h = gzsl_scores(pred[seen_rows], seen_labels, pred[unseen_rows], unseen_labels, num_seen).H
        best = max(best, h)
    return best


def test_choose_calibration_finds_the_best_validation_h():
    generator = torch.Generator().manual_seed(0)
    num_seen, num_unseen, n = 3, 2, 60
    scores = torch.randn(n, num_seen + num_unseen, generator=generator)
    scores[:, :num_seen] += 1.0  # a seen bias to correct
    seen_rows, unseen_rows = torch.arange(0, 30), torch.arange(30, 60)
    seen_labels = torch.randint(0, num_seen, (30,), generator=generator)
    unseen_labels = torch.randint(0, num_unseen, (30,), generator=generator)
    for row, label in zip(seen_rows, seen_labels, strict=True):
        scores[row, label] += 1.5
    for row, label in zip(unseen_rows, unseen_labels, strict=True):
        scores[row, num_seen + label] += 1.5
    classifier = _Fixed(scores)
    features = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    offset, chosen = choose_calibration(
        classifier,
        val_seen_features=features[seen_rows],
        val_seen_labels=seen_labels,
        val_unseen_features=features[unseen_rows],
        val_unseen_labels=unseen_labels,
        num_seen=num_seen,
    )
    best = _brute_force_best_h(scores, seen_rows, seen_labels, unseen_rows, unseen_labels, 3)
    assert chosen.H == pytest.approx(best) and best > 0
    assert offset > 0  # the seen bias is taken off, not added
    # and the offset really gives those scores
    pred_seen = calibrated_predict(classifier, features[seen_rows], num_seen, offset)
    pred_unseen = calibrated_predict(classifier, features[unseen_rows], num_seen, offset)
    again = gzsl_scores(pred_seen, seen_labels, pred_unseen, unseen_labels, num_seen)
    assert again.H == pytest.approx(chosen.H)


def test_offset_zero_is_the_plain_argmax():
    classifier = nn.Linear(4, 5)
    x = torch.randn(50, 4)
    assert torch.equal(calibrated_predict(classifier, x, 3, 0.0), predict(classifier, x))


def test_final_protocol_chooses_the_offset_without_reading_the_test_set(tmp_path):
    root = make_tiny(tmp_path)
    config = tiny_config(seed=1)

    def loader(noisy: bool):
        def load(split):
            data = load_tiny(root, split=split)
            if split == "test" and noisy:  # other test features: the chosen offset must not move
                data = dataclasses.replace(
                    data,
                    test_seen_features=torch.rand_like(data.test_seen_features),
                    test_unseen_features=torch.rand_like(data.test_unseen_features),
                )
            return data

        return load

    plain = run_protocol("final", config, loader(False), device="cpu", calibrate=True)
    noisy = run_protocol("final", config, loader(True), device="cpu", calibrate=True)
    assert plain.calibrated["offset"] == noisy.calibrated["offset"]
    assert plain.calibrated["validation_H"] >= plain.calibrated["validation_H_uncalibrated"]
    uncalibrated = run_protocol("final", config, loader(False), device="cpu")
    assert (uncalibrated.S, uncalibrated.H, uncalibrated.T1) == (plain.S, plain.H, plain.T1)
    assert uncalibrated.calibrated is None


def test_calibrate_needs_the_final_protocol(tmp_path):
    root = make_tiny(tmp_path)
    with pytest.raises(ValueError, match="protocol 'final' only"):
        run_protocol("val", tiny_config(), lambda s: load_tiny(root, split=s), calibrate=True)
