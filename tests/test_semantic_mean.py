"""The linear semantic mean (conditioning="mean"): ridge fit, shift transform, its flow."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from gsmflow_nflows import build_gsmflow
from gsmflow_nflows.model import generate_features
from gsmflow_nflows.semantic_mean import SemanticShiftTransform, fit_ridge_map
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


def test_mean_conditioned_flow_samples_around_the_means():
    classes = torch.rand(5, 4)
    seen_means = torch.randn(3, 8) * 3
    weight, bias = fit_ridge_map(classes[:3], seen_means)
    flow = build_gsmflow(
        8, classes, num_blocks=2, hidden_features=8, conditioning="mean",
        semantic_mean=(weight, bias), known_means=(classes[:3], seen_means),
    )  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    features, labels = generate_features(flow, classes, 4000, generator=generator)
    centres = torch.stack([features[labels == c].mean(0) for c in range(5)])
    # seen classes: their own means; unseen: the ridge prediction (the couplings start near 0)
    expected = torch.cat([seen_means, classes[3:].double() @ weight + bias]).float()
    torch.testing.assert_close(centres, expected, atol=0.15, rtol=0)


def test_mean_arguments_need_mean_conditioning():
    classes = torch.rand(4, 2)
    with pytest.raises(ValueError, match="only with conditioning='mean'"):
        build_gsmflow(4, classes, semantic_mean=(torch.zeros(2, 4), torch.zeros(4)))
    with pytest.raises(ValueError, match="Expected semantic_mean of shapes"):
        build_gsmflow(
            4, classes, conditioning="mean", semantic_mean=(torch.zeros(3, 4), torch.zeros(4))
        )
