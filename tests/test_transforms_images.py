"""The coupling on ``[batch, channels, ...]`` inputs, as nflows' own couplings take them.

The first tests are the assertions of nflows 0.14's ``AffineTransformTest``
(``tests/transforms/coupling_test.py`` in the nflows repository) written again
for our class, on nflows' shapes ``[20]`` and ``[2, 4, 4]`` with nflows' nets
(``ResidualNet``, ``ConvResidualNet``) and mid-split mask; then conditional
variants, the shared harness on images, hand computations and errors.
"""

import pytest
import torch
from nflows.distributions.normal import StandardNormal
from nflows.flows.base import Flow
from nflows.nn.nets import ConvResidualNet, ResidualNet
from nflows.transforms.base import CompositeTransform, InverseTransform
from nflows.transforms.conv import OneByOneConvolution
from nflows.transforms.normalization import ActNorm
from nflows.utils import torchutils
from torch import nn

from gsmflow_nflows import SemanticAffineCouplingTransform, SemanticCouplingNet, soft_clamp
from tests.transform_harness import check_transform

BATCH = 10
SHAPES = [[20], [2, 4, 4]]
CONTEXT = 3


def make_coupling(shape, mask=None, context=False):
    """Our coupling with the nets of nflows' ``create_coupling_transform``, context optional."""
    context_size = CONTEXT if context else None
    if len(shape) == 1:

        def create_net(in_features, out_features):
            return ResidualNet(
                in_features, out_features, 30, context_features=context_size, num_blocks=5
            )

    else:

        def create_net(in_channels, out_channels):
            return ConvResidualNet(in_channels, out_channels, 16, context_channels=context_size)

    if mask is None:
        mask = torchutils.create_mid_split_binary_mask(shape[0])
    return SemanticAffineCouplingTransform(mask, create_net), torch.as_tensor(mask)


def make_context(shape, batch=BATCH):
    """A vector context for ``[batch, features]``, a broadcast context image otherwise."""
    vector = torch.randn(batch, CONTEXT)
    if len(shape) == 1:
        return vector
    return vector[:, :, None, None].expand(batch, CONTEXT, *shape[1:])


def assert_tensor_is_good(tensor, shape):
    assert isinstance(tensor, torch.Tensor)
    assert torch.isfinite(tensor).all()
    assert tensor.shape == torch.Size(shape)


# ---- nflows' AffineTransformTest, for our class ----------------------------------------------


@pytest.mark.parametrize("context", [False, True], ids=["unconditional", "conditional"])
@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_nflows_forward_and_inverse(shape, direction, context):
    inputs = torch.randn(BATCH, *shape)
    transform, mask = make_coupling(shape, context=context)
    h = make_context(shape) if context else None
    # nflows' test_inverse calls the forward pass; here each direction is run.
    call = transform if direction == "forward" else transform.inverse
    outputs, logabsdet = call(inputs, context=h)
    assert_tensor_is_good(outputs, [BATCH, *shape])
    assert_tensor_is_good(logabsdet, [BATCH])
    assert torch.equal(outputs[:, mask <= 0, ...], inputs[:, mask <= 0, ...])
    assert not torch.allclose(outputs[:, mask > 0, ...], inputs[:, mask > 0, ...])


@pytest.mark.parametrize("context", [False, True], ids=["unconditional", "conditional"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_nflows_forward_inverse_are_consistent(shape, context):
    inputs = torch.randn(BATCH, *shape)
    transform, _ = make_coupling(shape, context=context)
    h = make_context(shape) if context else None
    identity = CompositeTransform([InverseTransform(transform), transform])
    outputs, logabsdet = identity(inputs, context=h)
    assert_tensor_is_good(outputs, inputs.shape)
    assert_tensor_is_good(logabsdet, inputs.shape[:1])
    torch.testing.assert_close(outputs, inputs, atol=1e-6, rtol=0)
    torch.testing.assert_close(logabsdet, torch.zeros(BATCH), atol=1e-6, rtol=0)


# ---- the shared harness on images and other [batch, channels, ...] inputs ------------------


def conv_net(context_channels=CONTEXT):
    return lambda i, o: ConvResidualNet(i, o, 8, context_channels=context_channels, num_blocks=1)


@pytest.mark.parametrize(
    "mask",
    [[1, 0], [0, 1], [1, 0, 1, 0], [0, 1, 1, 0]],
    ids=["first-half", "second-half", "interleaved", "scattered"],
)
def test_image_coupling_harness(mask):
    check_transform(
        lambda: SemanticAffineCouplingTransform(mask, conv_net()),
        (len(mask), 4, 4),
        context_features=(CONTEXT, 4, 4),
    )


def test_unconditional_image_coupling_harness():
    check_transform(
        lambda: SemanticAffineCouplingTransform([1, 0], conv_net(None)), (2, 4, 4), None
    )


def test_image_flow_with_nflows_transforms_harness():
    def make():
        return CompositeTransform(
            [
                ActNorm(4),
                SemanticAffineCouplingTransform([1, 1, 0, 0], conv_net()),
                OneByOneConvolution(4),
                SemanticAffineCouplingTransform([0, 1, 0, 1], conv_net()),
            ]
        )

    check_transform(make, (4, 2, 3), context_features=(CONTEXT, 2, 3))


class Conv1dNet(nn.Module):
    """A net for ``[batch, channels, length]`` inputs, with a ``[batch, A]`` vector context."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1)
        self.context_layer = nn.Linear(CONTEXT, out_channels)

    def forward(self, inputs, context):
        return self.conv(inputs) + self.context_layer(context)[:, :, None]


@pytest.mark.parametrize("mask", [[1, 1, 0], [1, 0, 1]], ids=["contiguous", "scattered"])
def test_sequence_coupling_harness(mask):
    # nflows' own coupling takes only 2-d and 4-d inputs; ours any [batch, channels, ...].
    check_transform(
        lambda: SemanticAffineCouplingTransform(mask, Conv1dNet), (3, 5), context_features=CONTEXT
    )


# ---- values by hand ------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [[1, 1, 0, 0, 0], [0, 1, 1, 0, 1]], ids=["sliced", "gathered"])
def test_image_coupling_matches_hand_computation(mask):
    torch.manual_seed(0)
    mask = torch.tensor(mask)
    coupling = SemanticAffineCouplingTransform(mask, conv_net(), clamp=0.7).double()
    x = torch.randn(3, 5, 2, 3, dtype=torch.float64)
    h = torch.randn(3, CONTEXT, 2, 3, dtype=torch.float64)
    transformed, identity = mask > 0, mask <= 0
    params = coupling.transform_net(x[:, identity], h)  # [3, 2 * transformed, 2, 3]
    count = int(transformed.sum())
    log_scale = 0.7 * 0.636 * torch.atan(params[:, :count] / 0.7)
    expected = x.clone()
    expected[:, transformed] = x[:, transformed] * torch.exp(log_scale) + params[:, count:]
    outputs, logabsdet = coupling(x, context=h)
    torch.testing.assert_close(outputs, expected, rtol=1e-12, atol=1e-12)
    # The log-det sums the log-scales over channels, rows and columns of each image.
    by_hand = torch.stack([log_scale[i].sum() for i in range(3)])
    torch.testing.assert_close(logabsdet, by_hand, rtol=1e-12, atol=1e-12)
    restored, inverse_logabsdet = coupling.inverse(outputs, context=h)
    torch.testing.assert_close(restored, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(inverse_logabsdet, -by_hand, rtol=1e-12, atol=1e-12)


def test_pointwise_image_coupling_equals_vector_coupling_per_pixel():
    """A 1x1-conv net on images is the vector coupling applied to every pixel."""
    torch.manual_seed(0)
    mask = [1, 0, 1, 0]
    vector = SemanticAffineCouplingTransform(mask, lambda i, o: SemanticCouplingNet(i, o, 3, 8))
    vector.double()
    net = vector.transform_net

    class PointwiseNet(nn.Module):  # the same weights as 1x1 convolutions
        def forward(self, inputs, context):
            pixels = inputs.permute(0, 2, 3, 1).reshape(-1, inputs.shape[1])
            ctx = context.permute(0, 2, 3, 1).reshape(-1, context.shape[1])
            out = net(pixels, ctx)
            return out.reshape(*inputs.shape[:1], *inputs.shape[2:], -1).permute(0, 3, 1, 2)

    image = SemanticAffineCouplingTransform(mask, lambda i, o: PointwiseNet())
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    h = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    outputs, logabsdet = image(x, context=h)
    per_pixel, pixel_logabsdet = vector(
        x.permute(0, 2, 3, 1).reshape(-1, 4), context=h.permute(0, 2, 3, 1).reshape(-1, 3)
    )
    torch.testing.assert_close(outputs, per_pixel.reshape(2, 3, 3, 4).permute(0, 3, 1, 2))
    torch.testing.assert_close(logabsdet, pixel_logabsdet.reshape(2, 9).sum(1))


def test_image_flow_log_prob_and_sample_with_a_vector_embedded_as_an_image():
    """nflows' ``Flow`` with an embedding net that tiles the class vector to a context image."""

    class Tile(nn.Module):
        def forward(self, context):
            return context[:, :, None, None].expand(-1, -1, 4, 4)

    transform = CompositeTransform(
        [
            SemanticAffineCouplingTransform([1, 0], conv_net()),
            SemanticAffineCouplingTransform([0, 1], conv_net()),
        ]
    )
    flow = Flow(transform, StandardNormal([2, 4, 4]), embedding_net=Tile())
    x, h = torch.randn(5, 2, 4, 4), torch.randn(5, CONTEXT)
    log_prob = flow.log_prob(x, context=h)
    z, logabsdet = transform(x, context=Tile()(h))
    expected = StandardNormal([2, 4, 4]).log_prob(z) + logabsdet
    torch.testing.assert_close(log_prob, expected)
    samples = flow.sample(7, context=h[:2])
    assert samples.shape == (2, 7, 2, 4, 4) and torch.isfinite(samples).all()


# ---- errors --------------------------------------------------------------------------------


class LastDimensionNet(nn.Module):
    """A plain MLP layer given images: it acts on the last dimension, not the channels."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = nn.Linear(4, out_features)

    def forward(self, inputs, context):
        return self.linear(inputs)


def test_net_with_the_wrong_output_shape_is_named():
    coupling = SemanticAffineCouplingTransform([1, 0], LastDimensionNet)
    with pytest.raises(ValueError, match=r"return shape \[3, 2, 4, 4\], got \[3, 1, 4, 2\]"):
        coupling(torch.randn(3, 2, 4, 4))


def test_semantic_coupling_net_refuses_images():
    coupling = SemanticAffineCouplingTransform(
        [1, 1, 0, 0], lambda i, o: SemanticCouplingNet(i, o, 3, 8)
    )
    with pytest.raises(ValueError, match="SemanticCouplingNet takes inputs of shape .* ConvRes"):
        coupling(torch.randn(3, 4, 2, 2), context=torch.randn(3, 3))


def test_context_image_with_the_wrong_batch():
    coupling, _ = make_coupling([2, 4, 4], context=True)
    with pytest.raises(ValueError, match=r"one row per input \(4\), got 2 rows"):
        coupling(torch.randn(4, 2, 4, 4), context=torch.randn(2, CONTEXT, 4, 4))


def test_non_finite_image_is_refused():
    coupling, _ = make_coupling([2, 4, 4])
    x = torch.randn(2, 2, 4, 4)
    x[1, 0, 3, 2] = float("nan")
    with pytest.raises(ValueError, match="inputs holds 1 non-finite"):
        coupling.inverse(x)


def test_soft_clamp_bounds_the_image_log_det():
    coupling = SemanticAffineCouplingTransform([1, 0], conv_net(None), clamp=0.5)
    with torch.no_grad():
        coupling.transform_net.final_layer.bias[:1] = 1e4  # huge raw log-scale
        coupling.transform_net.final_layer.weight.zero_()
    _, logabsdet = coupling(torch.randn(3, 2, 4, 4))
    # 16 transformed pixels, each log-scale just under the bound 0.5.
    bound = 16 * soft_clamp(torch.tensor(1e4), 0.5)
    torch.testing.assert_close(logabsdet, bound.expand(3))
    assert (logabsdet < 16 * 0.5).all()
