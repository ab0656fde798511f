"""The relative positioning encoder: anchors by hand, the formula, and errors."""

import numpy as np
import pytest
import torch

from gsmflow_nflows import ContextGroups, RelativePositioningEncoder, select_anchors


def hand_anchors(matrix: np.ndarray) -> list[int]:
    """The anchor rule (min, max and median row sum of cosine similarities), in plain numpy."""
    count = matrix.shape[0]
    cosine = np.zeros((count, count))
    for i in range(count):
        for j in range(count):
            cosine[i, j] = (
                matrix[i] @ matrix[j] / np.linalg.norm(matrix[i]) / np.linalg.norm(matrix[j])
            )
    sums = cosine.sum(axis=1)
    order = sorted(range(count), key=lambda k: (sums[k], k))
    return [order[0], int(np.argmax(sums)), order[count // 2]]


def test_anchors_on_a_small_matrix_by_hand():
    # Row sums of cosines, computed on paper: class 2 is least similar to the
    # others (1.807), class 3 most (3.188); ascending order 2, 0, 1, 3 -> median index 2 -> class 1.
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [1.0, 1.0]])
    assert select_anchors(embeddings).tolist() == [2, 3, 1]


@pytest.mark.parametrize("count", [3, 7, 32])
def test_anchors_match_numpy_rule(count):
    matrix = np.random.default_rng(count).uniform(0.01, 1.0, size=(count, 5))
    got = select_anchors(torch.tensor(matrix)).tolist()
    assert got == hand_anchors(matrix)


def test_encoder_formula_by_hand():
    torch.manual_seed(0)
    classes = torch.randn(6, 4, dtype=torch.float64)
    encoder = RelativePositioningEncoder.from_class_embeddings(classes, out_features=5)
    assert encoder.anchors.dtype == torch.float64
    anchors = classes[select_anchors(classes)]
    a = torch.randn(3, 4, dtype=torch.float64)
    expected = sum(
        torch.clamp((a - anchors[k]) @ layer.weight.T + layer.bias, min=0)
        for k, layer in enumerate(encoder.anchor_layers)
    )
    torch.testing.assert_close(encoder(a), expected)


def test_grouped_encoder_matches_plain_values_and_gradients():
    torch.manual_seed(0)
    classes = torch.randn(5, 4, dtype=torch.float64)
    batch = classes[torch.tensor([0, 1, 1, 0, 3, 1, 0, 0])]
    plain = RelativePositioningEncoder.from_class_embeddings(classes, 6)
    grouped = RelativePositioningEncoder.from_class_embeddings(classes, 6, groups=ContextGroups())
    grouped.load_state_dict(plain.state_dict())
    out_plain, out_grouped = plain(batch), grouped(batch)
    torch.testing.assert_close(out_grouped, out_plain, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(out_plain)
    g_plain = torch.autograd.grad((out_plain * weights).sum(), list(plain.parameters()))
    g_grouped = torch.autograd.grad((out_grouped * weights).sum(), list(grouped.parameters()))
    for a, b in zip(g_plain, g_grouped, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_fewer_than_three_classes():
    with pytest.raises(ValueError, match="at least 3 classes.*got 2"):
        RelativePositioningEncoder.from_class_embeddings(torch.randn(2, 4))


def test_nan_class_embeddings():
    classes = torch.randn(5, 4)
    classes[2, 1] = float("nan")
    with pytest.raises(ValueError, match="class_embeddings holds 1 non-finite"):
        select_anchors(classes)


def test_zero_class_vector():
    classes = torch.randn(5, 4)
    classes[3] = 0
    with pytest.raises(ValueError, match=r"rows \[3\] are all zero"):
        select_anchors(classes)


def test_wrong_input_width_and_rank():
    encoder = RelativePositioningEncoder.from_class_embeddings(torch.randn(4, 3), 8)
    with pytest.raises(ValueError, match="with 3 features, got 5"):
        encoder(torch.randn(2, 5))
    with pytest.raises(ValueError, match="shape"):
        encoder(torch.randn(3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        encoder([[1.0, 2.0, 3.0]])


def test_no_anchors():
    with pytest.raises(ValueError, match="at least one anchor"):
        RelativePositioningEncoder(torch.empty(0, 3), 8)
