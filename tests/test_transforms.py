"""The coupling transform and its network, through the shared harness and by hand."""

import math
import re

import pytest
import torch
from nflows.transforms.base import CompositeTransform
from nflows.transforms.lu import LULinear
from nflows.transforms.permutations import RandomPermutation

from gsmflow_nflows import (
    ContextGroups,
    SemanticAffineCouplingTransform,
    SemanticCouplingNet,
    glow_block,
    soft_clamp,
)
from tests.transform_harness import check_transform, save_and_load


def make_net(context_features=3, hidden_features=8):
    return lambda i, o: SemanticCouplingNet(i, o, context_features, hidden_features)


@pytest.mark.parametrize(
    "mask",
    [[1, 1, 0, 0, 0], [0, 0, 1, 1, 1], [1, 0, 1, 0, 1], [0, 1, 1, 0, 0, 1]],
    ids=["first-half", "second-half", "interleaved", "scattered-even"],
)
def test_coupling_harness(mask):
    check_transform(
        lambda: SemanticAffineCouplingTransform(mask, make_net()), len(mask), context_features=3
    )


@pytest.mark.parametrize("features", [2, 5, 8])
def test_glow_block_harness(features):
    check_transform(
        lambda: glow_block(features, context_features=3, hidden_features=8), features, 3
    )


def test_composition_with_nflows_transforms_harness():
    def make():
        return CompositeTransform(
            [
                glow_block(6, 3, 8),
                RandomPermutation(6),
                SemanticAffineCouplingTransform([1, 0, 1, 0, 1, 0], make_net()),
                LULinear(6, identity_init=False),
                glow_block(6, 3, 8),
            ]
        )

    check_transform(make, 6, context_features=3)


def test_coupling_matches_hand_computation():
    torch.manual_seed(0)
    net = SemanticCouplingNet(2, 6, context_features=3, hidden_features=4)
    coupling = SemanticAffineCouplingTransform([0, 1, 1, 0, 1], lambda i, o: net, clamp=0.7)
    x, h = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    coupling = coupling.double()
    identity, transformed = x[:, [0, 3]], x[:, [1, 2, 4]]
    weight = net.first_layer_weight()
    hidden = torch.nn.functional.leaky_relu(
        torch.cat([identity, h], 1) @ weight.T + net.input_layer.bias, 0.2
    )
    params = hidden @ net.output_layer.weight.T + net.output_layer.bias
    log_scale = 0.7 * 0.636 * torch.atan(params[:, :3] / 0.7)
    expected = x.clone()
    expected[:, [1, 2, 4]] = transformed * torch.exp(log_scale) + params[:, 3:]
    outputs, logabsdet = coupling(x, context=h)
    torch.testing.assert_close(outputs, expected)
    torch.testing.assert_close(logabsdet, log_scale.sum(1))


@pytest.mark.parametrize("clamp", [0.5, 1.0, 2.0])
def test_soft_clamp_keeps_scales_inside_bounds(clamp):
    raw = torch.tensor([-1e9, -50.0, -1.0, 0.0, 1.0, 50.0, 1e9], dtype=torch.float64)
    scale = torch.exp(soft_clamp(raw, clamp))
    assert (scale > math.exp(-clamp)).all() and (scale < math.exp(clamp)).all()
    # It reaches beyond nflows' affine coupling, whose scale never exceeds 1.001.
    assert scale.max() > 1.5**clamp
    # Near zero it is close to the identity map of the log-scale (slope 0.636).
    assert soft_clamp(torch.tensor(1e-4), clamp).item() == pytest.approx(0.636e-4, rel=1e-6)


def test_coupling_can_expand_volume():
    coupling = SemanticAffineCouplingTransform([1, 1, 0, 0], make_net(), clamp=1.0)
    with torch.no_grad():
        coupling.transform_net.output_layer.bias[:2] = 100.0  # huge raw log-scale
        coupling.transform_net.output_layer.weight.zero_()
    x = torch.ones(3, 4)
    _, logabsdet = coupling(x, context=torch.zeros(3, 3))
    assert torch.all(logabsdet > 2 * 0.99) and torch.all(logabsdet < 2.0)


def test_grouped_context_equals_plain_linear():
    torch.manual_seed(1)
    classes = torch.randn(4, 5, dtype=torch.float64)
    context = classes[torch.tensor([0, 1, 0, 2, 2, 0, 1, 3, 0, 0])]
    inputs = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    grouped = SemanticCouplingNet(3, 4, 5, 6).double()
    assert grouped.groups(context) is not None
    outputs = grouped(inputs, context)
    # Plain Linear on the concatenation, by hand.
    by_hand = (
        torch.nn.functional.leaky_relu(
            torch.cat([inputs, context], 1) @ grouped.first_layer_weight().T
            + grouped.input_layer.bias,
            0.2,
        )
        @ grouped.output_layer.weight.T
        + grouped.output_layer.bias
    )
    torch.testing.assert_close(outputs, by_hand, rtol=1e-12, atol=1e-12)
    weight_grads = torch.autograd.grad(outputs.square().sum(), list(grouped.parameters()))
    hand_grads = torch.autograd.grad(by_hand.square().sum(), list(grouped.parameters()))
    for got, expected in zip(weight_grads, hand_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_context_requiring_grad_is_not_grouped_unless_its_producer_says_so():
    groups = ContextGroups()
    leaf = torch.ones(6, 2, requires_grad=True)
    assert groups(leaf) is None  # per-row gradients must stay per row
    derived = leaf * 2
    groups.remember(derived, (torch.tensor([0]), torch.zeros(6, dtype=torch.long)))
    assert groups(derived)[0].tolist() == [0]


def test_context_groups_indices():
    groups = ContextGroups()
    context = torch.tensor([[2.0, 0.0], [1.0, 1.0], [2.0, 0.0], [2.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    first, inverse = groups(context)
    assert first.tolist() == [0, 1]
    assert inverse.tolist() == [0, 1, 0, 0, 1, 0]
    assert groups(torch.randn(6, 2)) is None  # all distinct: not worth grouping
    expanded = torch.randn(1, 2).expand(5, 2)
    first, inverse = groups(expanded)
    assert first.tolist() == [0] and inverse.tolist() == [0] * 5


def test_context_groups_cache_sees_in_place_edits():
    groups = ContextGroups()
    context = torch.tensor([[1.0], [1.0], [1.0], [2.0]])
    assert groups(context)[1].tolist() == [0, 0, 0, 1]
    context[3] = 1.0
    assert groups(context)[1].tolist() == [0, 0, 0, 0]


def test_net_with_a_remembered_grouping_survives_torch_save():
    groups = ContextGroups(max_fraction=0.4)
    net = SemanticCouplingNet(2, 4, 3, 8, groups=groups)
    context = torch.ones(6, 3, requires_grad=True) * 2  # the encoder's output, say
    grouping = (torch.tensor([0]), torch.zeros(6, dtype=torch.long))
    groups.remember(context, grouping)  # the cache holds a weak reference to context
    loaded = save_and_load(net)
    assert loaded.groups.max_fraction == 0.4
    assert groups(context) is grouping  # the original keeps its cache
    assert loaded.groups(context) is None  # the copy's is empty: requires grad, not remembered
    inputs = torch.randn(6, 2)
    torch.testing.assert_close(loaded(inputs, context), net(inputs, context), rtol=0, atol=0)


# ---- errors, each before any computation -------------------------------------------------


@pytest.mark.parametrize("mask", [[0, 0, 0], [1, 1, 1], [1], [[1, 0], [0, 1]]])
def test_degenerate_masks_are_refused(mask):
    with pytest.raises(ValueError, match="mask"):
        SemanticAffineCouplingTransform(mask, make_net())


@pytest.mark.parametrize("clamp", [0, -1.0, float("nan"), float("inf")])
def test_bad_clamp_is_refused(clamp):
    with pytest.raises(ValueError, match="clamp"):
        SemanticAffineCouplingTransform([1, 0], make_net(), clamp=clamp)


@pytest.fixture
def coupling():
    return SemanticAffineCouplingTransform([1, 1, 0, 0, 0], make_net())


@pytest.mark.parametrize(
    "shape, expected",
    [
        ([4, 6], "[batch, 5]"),
        ([4, 6, 2, 2], "[batch, 5, ...]"),
        ([5], "[batch, 5] or [batch, 5, ...]"),
    ],
)
def test_wrong_feature_count(coupling, shape, expected):
    expected = f"Expected inputs of shape {expected}, got {shape}."
    with pytest.raises(ValueError, match=re.escape(expected)):
        coupling(torch.randn(*shape), context=torch.randn(shape[0], 3))


def test_wrong_context_width(coupling):
    with pytest.raises(ValueError, match="Expected context with 3 features, got 4"):
        coupling(torch.randn(4, 5), context=torch.randn(4, 4))


def test_wrong_context_batch(coupling):
    with pytest.raises(ValueError, match=r"one row per input \(4\), got 2 rows"):
        coupling.inverse(torch.randn(4, 5), context=torch.randn(2, 3))


def test_missing_context(coupling):
    with pytest.raises(ValueError, match="needs a context"):
        coupling(torch.randn(4, 5))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_and_context(coupling, bad):
    x = torch.randn(4, 5)
    x[1, 2] = bad
    with pytest.raises(ValueError, match="inputs holds 1 non-finite"):
        coupling(x, context=torch.randn(4, 3))
    h = torch.randn(4, 3)
    h[0, 0] = bad
    with pytest.raises(ValueError, match="context holds 1 non-finite"):
        coupling(torch.randn(4, 5), context=h)


def test_integer_inputs_and_dtype_mismatch(coupling):
    with pytest.raises(TypeError, match="floating-point"):
        coupling(torch.ones(4, 5, dtype=torch.long), context=torch.randn(4, 3))
    with pytest.raises(TypeError, match="dtype torch.float32"):
        coupling(torch.randn(4, 5, dtype=torch.float64), context=torch.randn(4, 3))


@pytest.mark.parametrize("name", ["in_features", "hidden_features"])
def test_bad_net_sizes(name):
    sizes = dict(in_features=3, out_features=4, context_features=2, hidden_features=8)
    sizes[name] = 0
    with pytest.raises(ValueError, match=name):
        SemanticCouplingNet(**sizes)
