"""The linear semantic mean (conditioning="mean"): ridge fit, shift transform, its flow."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from gsmflow_nflows import build_gsmflow
from gsmflow_nflows.model import generate_features
from gsmflow_nflows.semantic_mean import (
    SemanticShiftTransform,
    fit_ridge_map,
    residual_scale,
    residual_shrinkage,
)
from tests.transform_harness import check_transform


def test_fit_ridge_map_matches_scikit_learn():
    rng = np.random.default_rng(0)
    a, t = rng.random((7, 5)), rng.standard_normal((7, 9))
    weight, bias = fit_ridge_map(torch.from_numpy(a), torch.from_numpy(t), alpha=0.7)
    reference = Ridge(alpha=0.7).fit(a, t)
    np.testing.assert_allclose(weight.numpy(), reference.coef_.T, atol=1e-10)
    np.testing.assert_allclose(bias.numpy(), reference.intercept_, atol=1e-10)


def test_known_vectors_get_their_own_mean_others_the_linear_map():
    weight, bias = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([0.5, -0.5])
    known = torch.tensor([[1.0, 0.0]])
    shift = SemanticShiftTransform(
        weight, bias, known_vectors=known, known_means=torch.tensor([[9.0, 9.0]])
    )
    context = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1e-6]])
    # by hand: row 0 is known; row 1: [3, 4] + b; row 2: [1 + 3e-6, 2 + 4e-6] + b
    expected = torch.tensor([[9.0, 9.0], [3.5, 3.5], [1.5 + 3e-6, 1.5 + 4e-6]])
    torch.testing.assert_close(shift.mean(context), expected)
    x = torch.randn(3, 2)
    y, logabsdet = shift(x, context=context)
    torch.testing.assert_close(y, x - expected)
    assert torch.equal(logabsdet, torch.zeros(3))


def test_shift_transform_passes_the_harness():
    weight, bias = torch.randn(3, 6), torch.randn(6)
    check_transform(lambda: SemanticShiftTransform(weight, bias), features=6, context_features=3)


def test_mean_conditioned_flow_passes_the_harness():
    classes = torch.rand(5, 3)
    weight, bias = fit_ridge_map(classes[:3], torch.randn(3, 6))

    def make():
        flow = build_gsmflow(
            6, classes, num_blocks=2, hidden_features=8, conditioning="mean",
            semantic_mean=(weight, bias),
        )  # fmt: skip
        return flow._transform

    check_transform(make, features=6, context_features=3)


def _mean_flow(**options):
    """A mean-conditioned flow of 8-d features for 5 classes (3 seen), and each class's mean.

    The means: the seen classes' own, the unseen ones' the ridge prediction.
    """
    classes = torch.rand(5, 4)
    seen_means = torch.randn(3, 8) * 3
    weight, bias = fit_ridge_map(classes[:3], seen_means)
    flow = build_gsmflow(
        8, classes, num_blocks=2, hidden_features=8, conditioning="mean",
        semantic_mean=(weight, bias), known_means=(classes[:3], seen_means), **options,
    )  # fmt: skip
    expected = torch.cat([seen_means, classes[3:].double() @ weight + bias]).float()
    return flow, classes, expected


def test_mean_conditioned_flow_samples_around_the_means():
    flow, classes, expected = _mean_flow()
    generator = torch.Generator().manual_seed(0)
    features, labels = generate_features(flow, classes, 4000, generator=generator)
    centres = torch.stack([features[labels == c].mean(0) for c in range(5)])
    # seen classes: their own means; unseen: the ridge prediction (the couplings start near 0)
    torch.testing.assert_close(centres, expected, atol=0.15, rtol=0)


def test_mean_arguments_need_mean_conditioning():
    classes = torch.rand(4, 2)
    with pytest.raises(ValueError, match="only with conditioning='mean'"):
        build_gsmflow(4, classes, semantic_mean=(torch.zeros(2, 4), torch.zeros(4)))
    with pytest.raises(ValueError, match="Expected semantic_mean of shapes"):
        build_gsmflow(
            4, classes, conditioning="mean", semantic_mean=(torch.zeros(3, 4), torch.zeros(4))
        )


def test_scaled_shift_passes_the_harness():
    weight, bias, scale = torch.randn(3, 6), torch.randn(6), torch.rand(6) + 0.1
    check_transform(
        lambda: SemanticShiftTransform(weight, bias, scale=scale), features=6, context_features=3
    )


def test_scaled_shift_is_the_standardised_residual():
    weight, bias, scale = torch.randn(2, 3), torch.randn(3), torch.tensor([0.5, 2.0, 4.0])
    shift = SemanticShiftTransform(weight, bias, scale=scale)
    x, a = torch.randn(5, 3), torch.randn(5, 2)
    y, logabsdet = shift(x, context=a)
    torch.testing.assert_close(y, (x - (a @ weight + bias)) / scale)
    # log|det| of x -> (x - m) / s is -sum(log s) = -log(0.5 * 2 * 4)
    torch.testing.assert_close(logabsdet, torch.full((5,), -float(np.log(4.0))))
    with pytest.raises(ValueError, match="positive"):
        SemanticShiftTransform(weight, bias, scale=torch.tensor([1.0, 0.0, 1.0]))


def test_state_without_scale_loads_as_unscaled():
    shift = SemanticShiftTransform(torch.ones(2, 3), torch.zeros(3), scale=torch.full((3,), 2.0))
    state = {k: v for k, v in shift.state_dict().items() if k != "scale"}
    shift.load_state_dict(state)
    assert torch.equal(shift.scale, torch.ones(3))


def test_residual_scale_is_the_pooled_std_with_a_floor():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(40)
    features = torch.randn(120, 4, generator=generator) * torch.tensor([1.0, 3.0, 0.0, 1e-6])
    features = features + 10 * labels[:, None].float()  # class offsets do not count
    sigma = residual_scale(features, labels, 3, floor=0.1)
    residual = torch.cat([features[labels == c] - features[labels == c].mean(0) for c in range(3)])
    pooled = (residual.double().pow(2).sum(0) / (120 - 3)).sqrt()
    floor = 0.1 * float(pooled.pow(2).mean().sqrt())
    torch.testing.assert_close(sigma[:2], pooled[:2])
    torch.testing.assert_close(sigma[2:], torch.full((2,), floor, dtype=torch.float64))


def test_generated_classes_are_centred_on_their_semantic_means():
    # far from the identity: the raw samples' means drift
    flow, classes, expected = _mean_flow(init_scale=0.3)

    def centres(**kwargs):
        generator = torch.Generator().manual_seed(0)
        features, labels = generate_features(flow, classes, 50, generator=generator, **kwargs)
        return torch.stack([features[labels == c].mean(0) for c in range(5)]), features

    centred, features = centres()
    torch.testing.assert_close(centred, expected, atol=1e-4, rtol=0)
    raw, raw_features = centres(centre=False)
    assert (raw - expected).abs().max() > 0.1  # the drift the centring removes
    # centring moves whole classes: within-class deviations are unchanged
    torch.testing.assert_close(features - features.view(5, 50, 8).mean(1).repeat_interleave(50, 0),
        raw_features - raw_features.view(5, 50, 8).mean(1).repeat_interleave(50, 0))  # fmt: skip


def test_centre_needs_a_semantic_mean():
    classes = torch.rand(4, 3)
    flow = build_gsmflow(6, classes, num_blocks=1, hidden_features=8, semantic_features=4)
    with pytest.raises(ValueError, match="semantic mean"):
        generate_features(flow, classes, 3, centre=True)


def _brute_force_shrinkage(features, labels, num_classes, scale, folds, grid):
    """Leave-classes-out Gaussian log-likelihood, with torch.distributions, for each lambda."""
    residuals = torch.cat(
        [
            (features[labels == c] - features[labels == c].mean(0)) / scale
            for c in range(num_classes)
        ]
    ).double()
    owners = torch.cat([labels[labels == c] for c in range(num_classes)])
    scores = []
    for lam in np.linspace(0, 1, grid):
        total = 0.0
        for fold in range(folds):
            held = owners % folds == fold
            rest = residuals[~held]
            sigma = (1 - lam) * (rest.T @ rest / rest.shape[0]) + lam * torch.eye(rest.shape[1])
            if torch.linalg.eigvalsh(sigma).min() <= 1e-12:
                total = -np.inf
                break
            normal = torch.distributions.MultivariateNormal(
                torch.zeros(rest.shape[1]).double(), sigma
            )
            total += float(normal.log_prob(residuals[held]).mean())
        scores.append(total)
    return float(np.linspace(0, 1, grid)[int(np.argmax(scores))])


@pytest.mark.parametrize("structure", [0.0, 0.5, 3.0])
def test_residual_shrinkage_matches_a_brute_force_likelihood(structure):
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(6).repeat_interleave(30)
    shared = torch.randn(180, 2, generator=generator) @ torch.randn(2, 5, generator=generator)
    own = torch.randn(6, 5, 5, generator=generator)[labels]  # each class its own covariance
    noise = (own @ torch.randn(180, 5, 1, generator=generator)).squeeze(-1)
    features = structure * shared + noise + 4 * labels[:, None].float()
    scale = residual_scale(features, labels, 6)
    got = residual_shrinkage(features, labels, 6, scale, folds=3, grid=11)
    assert got == pytest.approx(_brute_force_shrinkage(features, labels, 6, scale.float(), 3, 11))


def test_blend_gives_the_shrunk_covariance_to_unknown_classes_only():
    generator = torch.Generator().manual_seed(2)
    weight, bias, scale = torch.randn(2, 3), torch.randn(3), torch.tensor([1.0, 2.0, 0.5])
    known = torch.tensor([[1.0, 0.0]])
    shift = SemanticShiftTransform(
        weight, bias, known_vectors=known, known_means=torch.zeros(1, 3), scale=scale,
        shrinkage=0.25,
    )  # fmt: skip
    context = torch.tensor([[1.0, 0.0], [0.3, 0.7]])
    mean = torch.stack([torch.zeros(3), context[1] @ weight + bias])
    correlated = torch.randn(2, 20000, 1, generator=generator) * torch.tensor([1.0, 1.0, 1.0])
    samples = mean[:, None] + scale * correlated  # fully correlated residual, unit marginals
    out = shift.blend(samples, context, torch.randn(2, 20000, 3, generator=generator))
    assert torch.equal(out[0], samples[0])  # a known class is left alone
    residual = (out[1] - mean[1]) / scale
    expected = 0.75 * torch.ones(3, 3) + 0.25 * torch.eye(3)
    torch.testing.assert_close(residual.T @ residual / 20000, expected, atol=0.03, rtol=0)
