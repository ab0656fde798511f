import dataclasses

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from gsmflow_nflows.evaluation import (
    GZSLScores,
    gzsl_scores,
    harmonic_mean,
    per_class_accuracy,
    zsl_top1,
)


def test_per_class_accuracy_hand_example():
    # class 0: 2 of 3 right; class 1: 0 of 1; class 2: 2 of 2 -> (2/3 + 0 + 1) / 3
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    preds = torch.tensor([0, 0, 2, 0, 2, 2])
    assert per_class_accuracy(preds, labels) == pytest.approx(5 / 9)


def test_per_class_accuracy_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, size=200)
    preds = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 7, size=200))
    expected = balanced_accuracy_score(labels, preds)
    assert per_class_accuracy(torch.from_numpy(preds), torch.from_numpy(labels)) == pytest.approx(
        expected
    )
    assert per_class_accuracy(preds, labels) == pytest.approx(expected)  # numpy input


def test_per_class_accuracy_takes_scores():
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    assert per_class_accuracy(scores, torch.tensor([0, 1, 1])) == pytest.approx(0.75)


def test_per_class_accuracy_over_given_classes():
    labels = torch.tensor([3, 3, 5, 7])
    preds = torch.tensor([3, 0, 0, 7])
    assert per_class_accuracy(preds, labels, classes=torch.tensor([3, 5])) == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"none of \[4\]"):
        per_class_accuracy(preds, labels, classes=[3, 4])


@pytest.mark.parametrize(
    ("preds", "labels", "error"),
    [
        (torch.tensor([0, 1]), torch.tensor([0, 1, 1]), ValueError),
        (torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), ValueError),
        (torch.tensor([0, 1]), torch.tensor([0, -1]), ValueError),
        (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), ValueError),
        (torch.tensor([0, 1]), torch.tensor([0.0, 1.0]), TypeError),
        ("ab", torch.tensor([0, 1]), TypeError),
    ],
)
def test_per_class_accuracy_rejects_bad_input(preds, labels, error):
    with pytest.raises(error):
        per_class_accuracy(preds, labels)


def test_harmonic_mean():
    assert harmonic_mean(0.5, 0.75) == pytest.approx(0.6)
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(0.0, 0.9) == 0.0
    with pytest.raises(ValueError):
        harmonic_mean(-0.1, 0.5)
    with pytest.raises(ValueError):
        harmonic_mean(float("nan"), 0.5)


def test_gzsl_scores_hand_example():
    # S = 2 seen classes, U = 2 unseen (outputs 2 and 3).
    seen_labels = torch.tensor([0, 0, 1, 1])
    seen_preds = torch.tensor([0, 2, 1, 3])  # class 0: 1/2, class 1: 1/2 -> S = 0.5
    unseen_labels = torch.tensor([0, 0, 1, 1])  # outputs 2, 2, 3, 3
    unseen_preds = torch.tensor([2, 2, 3, 0])  # class 0: 1, class 1: 1/2 -> U = 0.75
    scores = gzsl_scores(seen_preds, seen_labels, unseen_preds, unseen_labels, num_seen=2)
    assert scores.S == pytest.approx(0.5)
    assert scores.U == pytest.approx(0.75)
    assert scores.H == pytest.approx(0.6)
    # unseen predictions that are the LOCAL label (without the shift) count as wrong
    wrong = gzsl_scores(seen_preds, seen_labels, unseen_labels, unseen_labels, num_seen=2)
    assert wrong.U == 0.0 and wrong.H == 0.0


def test_gzsl_scores_take_logits():
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 3]), 4).float()
    scores = gzsl_scores(logits, torch.tensor([0, 1, 1]), logits[2:], torch.tensor([1]), 2)
    assert scores == GZSLScores(S=0.75, U=1.0, H=harmonic_mean(0.75, 1.0))


def test_gzsl_scores_validation():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gzsl_scores(torch.tensor([0]), torch.tensor([2]), torch.tensor([2]), torch.tensor([0]), 2)
    with pytest.raises(ValueError):
        gzsl_scores(torch.tensor([0]), torch.tensor([0]), torch.tensor([2]), torch.tensor([0]), 0)


def test_gzsl_scores_is_frozen():
    scores = GZSLScores(S=0.1, U=0.2, H=0.3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        scores.S = 1.0


def test_zsl_top1():
    assert zsl_top1(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 0, 2])) == pytest.approx(
        (0.5 + 1 + 1) / 3
    )


def test_class_accuracies_by_hand():
    from gsmflow_nflows.evaluation.metrics import class_accuracies

    labels = torch.tensor([0, 0, 0, 2, 2, 1])
    predictions = torch.tensor([0, 1, 0, 2, 0, 1])
    # class 0: 2 of 3; class 1: 1 of 1; class 2: 1 of 2; class 3: no samples
    accuracies = class_accuracies(predictions, labels, 4)
    assert accuracies[:3] == [2 / 3, 1.0, 0.5]
    assert accuracies[3] != accuracies[3]  # nan


def test_gzsl_scores_per_class_average_to_s_and_u():
    seen_labels = torch.tensor([0, 0, 1, 1, 1])
    seen_preds = torch.tensor([0, 2, 1, 1, 3])  # class 0: 1/2, class 1: 2/3
    unseen_labels = torch.tensor([0, 1, 1, 1])
    unseen_preds = torch.tensor([2, 0, 3, 3])  # unseen 0 -> output 2: 1/1; unseen 1: 2/3
    scores = gzsl_scores(seen_preds, seen_labels, unseen_preds, unseen_labels, 2, per_class=True)
    assert scores.seen_per_class == [0.5, 2 / 3]
    assert scores.unseen_per_class == [1.0, 2 / 3]
    assert scores.S == pytest.approx((0.5 + 2 / 3) / 2)
    assert scores.U == pytest.approx((1.0 + 2 / 3) / 2)
    plain = gzsl_scores(seen_preds, seen_labels, unseen_preds, unseen_labels, 2)
    assert plain.seen_per_class is None and (plain.S, plain.U) == (scores.S, scores.U)
