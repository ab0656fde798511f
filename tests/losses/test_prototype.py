import pytest
import torch
from nflows.distributions.normal import StandardNormal
from nflows.flows.base import Flow
from nflows.transforms.base import Transform
from torch import nn

from gsmflow_nflows.losses import PrototypeLoss, class_means


class ConditionalShift(Transform):
    """forward: x - mu(h); inverse: z + mu(h); so inverse(0 | h) = mu(h)."""

    def __init__(self, features: int, context_features: int):
        super().__init__()
        self.mu = nn.Linear(context_features, features)

    def forward(self, inputs, context=None):
        return inputs - self.mu(context), inputs.new_zeros(inputs.shape[0])

    def inverse(self, inputs, context=None):
        return inputs + self.mu(context), inputs.new_zeros(inputs.shape[0])


def make_flow(features=2, context_features=3, embedding_features=4):
    return Flow(
        ConditionalShift(features, context_features),
        StandardNormal([features]),
        embedding_net=nn.Linear(embedding_features, context_features),
    )


def test_zero_when_inverse_of_zero_is_the_centroid():
    flow = make_flow()
    embeddings = torch.randn(3, 4)
    with torch.no_grad():
        centroids = flow._transform.mu(flow._embedding_net(embeddings))
    assert PrototypeLoss(weight=5.0)(flow, embeddings, centroids).item() == pytest.approx(0.0)


def test_equals_weighted_hand_mse():
    flow = make_flow()
    with torch.no_grad():  # inverse(0 | h) = (1, -1) for every class
        flow._transform.mu.weight.zero_()
        flow._transform.mu.bias.copy_(torch.tensor([1.0, -1.0]))
    means = torch.tensor([[1.0, 1.0], [3.0, -1.0]])
    # squared errors: (0, 4), (4, 0) -> mean 2; times weight 3
    loss = PrototypeLoss(weight=3.0)(flow, torch.randn(2, 4), means)
    assert loss.item() == pytest.approx(6.0)


def test_gradient_reaches_flow_but_not_embedding_net():
    flow = make_flow()
    loss = PrototypeLoss(weight=1.0)(flow, torch.randn(3, 4), torch.randn(3, 2))
    loss.backward()
    assert flow._transform.mu.weight.grad is not None
    assert flow._transform.mu.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in flow._embedding_net.parameters())


def test_class_means_hand_example():
    features = torch.tensor([[0.0, 0.0], [2.0, 4.0], [5.0, 5.0], [1.0, 1.0]])
    labels = torch.tensor([1, 1, 0, 2])
    expected = torch.tensor([[5.0, 5.0], [1.0, 2.0], [1.0, 1.0]])
    torch.testing.assert_close(class_means(features, labels, 3), expected)


def test_class_means_follows_dtype():
    features = torch.randn(5, 2, dtype=torch.float64)
    out = class_means(features, torch.tensor([0, 1, 0, 1, 1]), 2)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out[0], features[[0, 2]].mean(0))


def test_class_means_rejects_empty_class():
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        class_means(torch.randn(3, 2), torch.tensor([0, 0, 2]), 3)


@pytest.mark.parametrize(
    ("labels", "num_classes", "error"),
    [
        (torch.tensor([0, 1, 3]), 3, ValueError),
        (torch.tensor([0, -1, 1]), 3, ValueError),
        (torch.tensor([0, 1]), 2, ValueError),
        (torch.tensor([0.0, 1.0, 1.0]), 2, TypeError),
        (torch.tensor([0, 1, 1]), 0, ValueError),
    ],
)
def test_class_means_rejects_bad_labels(labels, num_classes, error):
    with pytest.raises(error):
        class_means(torch.randn(3, 2), labels, num_classes)


def test_class_means_rejects_nan():
    with pytest.raises(ValueError, match="finite"):
        class_means(torch.tensor([[float("nan")]]), torch.tensor([0]), 1)


def test_prototype_loss_validation():
    with pytest.raises(ValueError):
        PrototypeLoss(weight=-1.0)
    with pytest.raises(TypeError):
        PrototypeLoss(weight="3")
    loss = PrototypeLoss(weight=1.0)
    with pytest.raises(TypeError, match="nflows Flow"):
        loss(nn.Linear(2, 2), torch.randn(3, 4), torch.randn(3, 2))
    with pytest.raises(ValueError, match="3 rows"):
        loss(make_flow(), torch.randn(3, 4), torch.randn(2, 2))
