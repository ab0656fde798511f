import math

import pytest
import torch
from nflows.distributions.normal import StandardNormal
from nflows.flows.base import Flow
from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
from torch import nn

from gsmflow_nflows.losses import nll_per_dim


def test_matches_hand_formula():
    noise = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    logabsdet = torch.tensor([0.5, 1.5])
    # mean(z^2) = 30 / 4 = 7.5 -> 3.75; mean(logabsdet) / D = 1.0 / 2 = 0.5
    assert nll_per_dim(noise, logabsdet).item() == pytest.approx(3.25)


def test_equals_flow_log_prob_up_to_constant():
    features, context_features, embedding_features = 3, 2, 4
    transform = MaskedAffineAutoregressiveTransform(
        features=features, hidden_features=8, context_features=context_features
    )
    flow = Flow(transform, StandardNormal([features]), embedding_net=nn.Linear(4, 2))
    flow = flow.double()
    with torch.no_grad():  # move away from the near-identity initialisation
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(6, features, dtype=torch.float64)
    a = torch.randn(6, embedding_features, dtype=torch.float64)
    noise, logabsdet = flow._transform(x, context=flow._embedding_net(a))
    assert logabsdet.abs().max() > 1e-2  # the test would be weak on a volume-preserving map
    expected = -flow.log_prob(x, context=a).mean() / features - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(nll_per_dim(noise, logabsdet), expected)


def test_is_differentiable():
    noise = torch.randn(3, 4, requires_grad=True)
    logabsdet = torch.randn(3, requires_grad=True)
    nll_per_dim(noise, logabsdet).backward()
    torch.testing.assert_close(noise.grad, noise.detach() / 12)
    torch.testing.assert_close(logabsdet.grad, torch.full((3,), -1.0 / 12))


@pytest.mark.parametrize(
    ("noise", "logabsdet", "error"),
    [
        ([[1.0]], torch.zeros(1), TypeError),
        (torch.zeros(3), torch.zeros(3), ValueError),
        (torch.zeros(3, 2), torch.zeros(2), ValueError),
        (torch.zeros(3, 2), torch.zeros(3, 1), ValueError),
        (torch.zeros(0, 2), torch.zeros(0), ValueError),
    ],
)
def test_rejects_bad_input(noise, logabsdet, error):
    with pytest.raises(error):
        nll_per_dim(noise, logabsdet)
