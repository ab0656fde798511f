"""Weighted generated features: the classifier's weighted loss, and oversampled evaluation."""

import pytest
import torch

from gsmflow_nflows.errors import ConfigError
from gsmflow_nflows.evaluation import (
    SoftmaxClassifier,
    evaluate_gzsl,
    generated_sample_weights,
    train_softmax_classifier,
)
from gsmflow_nflows.training.config import EvaluationConfig
from gsmflow_nflows.training.presets import oversample_rule


def _blobs(per_class, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(per_class)
    centres = 2.0 * torch.randn(3, 5, generator=g) + shift
    return centres[labels] + torch.randn(labels.numel(), 5, generator=g), labels


def test_first_step_follows_the_hand_computed_weighted_gradient():
    # Two samples pull the bias of class 0 in opposite directions; the weights decide which wins.
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    weights = torch.tensor([0.1, 3.0])
    lr = 0.01
    init = SoftmaxClassifier(2, 2, generator=torch.Generator().manual_seed(4))
    clf = train_softmax_classifier(
        features,
        labels,
        2,
        lr=lr,
        batch_size=2,
        epochs=1,
        generator=torch.Generator().manual_seed(4),
        sample_weights=weights,
    )
    with torch.no_grad():
        residual = torch.softmax(init.linear(features), 1) - torch.eye(2)[labels]
        w = (weights / weights.mean())[:, None]
        grad_bias = (w * residual).mean(0)
        plain_bias = residual.mean(0)
    # Adam's first step is -lr * sign(g); the weighted gradient's sign, not the plain one's.
    torch.testing.assert_close(clf.linear.bias, -lr * grad_bias.sign(), atol=1e-6, rtol=0)
    assert not torch.equal(grad_bias.sign(), plain_bias.sign())


def test_integer_weights_equal_repeated_rows_on_full_batches():
    features, labels = _blobs(6, seed=1)
    repeats = torch.tensor([1, 3, 2] * 6)
    settings = dict(lr=0.05, epochs=25, weight_decay=1e-3)
    weighted = train_softmax_classifier(
        features,
        labels,
        3,
        batch_size=features.shape[0],
        generator=torch.Generator().manual_seed(0),
        sample_weights=repeats.float(),
        **settings,
    )
    repeated = train_softmax_classifier(
        features.repeat_interleave(repeats, dim=0),
        labels.repeat_interleave(repeats),
        3,
        batch_size=int(repeats.sum()),
        generator=torch.Generator().manual_seed(0),
        **settings,
    )
    torch.testing.assert_close(weighted.linear.weight, repeated.linear.weight)
    torch.testing.assert_close(weighted.linear.bias, repeated.linear.bias)
    unweighted = train_softmax_classifier(
        features,
        labels,
        3,
        batch_size=features.shape[0],
        generator=torch.Generator().manual_seed(0),
        **settings,
    )
    assert not torch.allclose(unweighted.linear.weight, repeated.linear.weight, atol=1e-3)


def test_equal_weights_are_the_unweighted_loss():
    features, labels = _blobs(10, seed=2)
    common = dict(lr=0.01, batch_size=7, epochs=3)
    a = train_softmax_classifier(
        features, labels, 3, generator=torch.Generator().manual_seed(1), **common
    )
    b = train_softmax_classifier(
        features,
        labels,
        3,
        generator=torch.Generator().manual_seed(1),
        sample_weights=torch.full((30,), 0.25),
        **common,
    )
    assert torch.equal(a.linear.weight, b.linear.weight)


@pytest.mark.parametrize(
    "weights, message",
    [
        (torch.ones(3), "shape"),
        (-torch.ones(30), ">= 0"),
        (torch.zeros(30), "all be 0"),
        (torch.full((30,), float("nan")), "finite"),
    ],
)
def test_bad_weights_are_one_clear_error(weights, message):
    features, labels = _blobs(10, seed=3)
    with pytest.raises(ValueError, match=message):
        train_softmax_classifier(
            features, labels, 3, lr=0.01, batch_size=8, epochs=1, sample_weights=weights
        )


def test_generated_sample_weights():
    weights = generated_sample_weights(3, 4, 0.25)
    assert weights.tolist() == [1.0, 1.0, 1.0, 0.25, 0.25, 0.25, 0.25]
    assert generated_sample_weights(3, 4, 1.0) is None
    with pytest.raises(ValueError):
        generated_sample_weights(3, 4, 0.0)


def test_oversampled_generated_set_scores_as_the_original_with_full_batches():
    seen, seen_labels = _blobs(8, seed=4)
    unseen, unseen_labels = _blobs(8, seed=5, shift=4.0)
    test_seen, test_seen_labels = _blobs(8, seed=6)
    test_unseen, test_unseen_labels = _blobs(8, seed=7, shift=4.0)
    common = dict(
        seen_features=seen,
        seen_labels=seen_labels,
        test_seen_features=test_seen,
        test_seen_labels=test_seen_labels,
        test_unseen_features=test_unseen,
        test_unseen_labels=test_unseen_labels,
        num_seen=3,
        num_unseen=3,
        lr=0.05,
        epochs=10,
        weight_decay=1e-3,
    )
    plain = evaluate_gzsl(
        generated_features=unseen,
        generated_labels=unseen_labels,
        batch_size=48,
        generator=torch.Generator().manual_seed(0),
        **common,
    )
    # Every generated row drawn 4 times (the same values), each weighing 1/4.
    oversampled = evaluate_gzsl(
        generated_features=unseen.repeat(4, 1),
        generated_labels=unseen_labels.repeat(4),
        batch_size=24 + 96,
        generator=torch.Generator().manual_seed(0),
        generated_weight=0.25,
        **common,
    )
    assert [s.H for s in oversampled] == pytest.approx([s.H for s in plain])


def test_evaluation_config_oversample():
    config = EvaluationConfig(samples_per_class=300, oversample=4)
    assert config.generated_per_class() == 1200
    assert config.generated_weight() == 0.25
    with pytest.raises(ConfigError, match="oversample"):
        EvaluationConfig(oversample=0)


@pytest.mark.parametrize(
    "samples, dim, unseen", [(290, 64, 3), (593, 2048, 12), (30, 1024, 50), (9000, 2048, 12)]
)
def test_oversample_rule_aims_at_50_draws_per_dimension_within_512_mib(samples, dim, unseen):
    k = oversample_rule(samples, dim, unseen)
    assert k >= 1
    within = samples * unseen * k * dim * 4 <= 512 * 2**20
    assert within or k == 1
    if k > 1 and (k + 1) * samples * unseen * dim * 4 <= 512 * 2**20:
        # not bounded by memory: the smallest k with k * samples >= 50 * dim
        assert k * samples >= 50 * dim > (k - 1) * samples


def test_cosine_schedule_converges_to_the_same_classifier_from_any_seed():
    """The regularised softmax loss is strictly convex: decayed to 0, every seed lands at its
    optimum, where the gradient of loss + weight decay vanishes (checked by autograd)."""
    features, labels = _blobs(20, seed=8)
    features = features + 0.8 * torch.randn(
        features.shape, generator=torch.Generator().manual_seed(9)
    )
    common = dict(lr=0.05, batch_size=15, epochs=400, weight_decay=0.05, lr_schedule="cosine")
    fits = [
        train_softmax_classifier(
            features, labels, 3, generator=torch.Generator().manual_seed(seed), **common
        )
        for seed in (0, 1)
    ]
    torch.testing.assert_close(fits[0].linear.weight, fits[1].linear.weight, atol=2e-3, rtol=0)
    # Adam's weight_decay adds wd * theta to the gradient: the optimum of mean NLL + wd/2 |theta|^2
    clf = fits[0]
    params = [clf.linear.weight, clf.linear.bias]
    loss = torch.nn.functional.nll_loss(clf(features), labels)
    loss = loss + 0.5 * 0.05 * sum(p.square().sum() for p in params)
    grads = torch.autograd.grad(loss, params)
    assert max(float(g.abs().max()) for g in grads) < 2e-3
    # with a constant rate the last iterates of two seeds stay further apart
    constant = [
        train_softmax_classifier(
            features,
            labels,
            3,
            generator=torch.Generator().manual_seed(seed),
            **{**common, "lr_schedule": "constant"},
        )
        for seed in (0, 1)
    ]
    gap = (constant[0].linear.weight - constant[1].linear.weight).abs().max()
    assert gap > (fits[0].linear.weight - fits[1].linear.weight).abs().max()


def test_unknown_lr_schedule_is_a_clear_error():
    features, labels = _blobs(4, seed=3)
    with pytest.raises(ValueError, match="Unknown lr_schedule 'step'"):
        train_softmax_classifier(
            features, labels, 3, lr=0.01, batch_size=4, epochs=1, lr_schedule="step"
        )
    with pytest.raises(ConfigError, match="classifier_lr_schedule"):
        EvaluationConfig(classifier_lr_schedule="step")
