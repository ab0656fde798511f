import pytest
import torch

from gsmflow_nflows.evaluation import SoftmaxClassifier, predict, train_softmax_classifier


def blobs(num_classes=3, per_class=30, dim=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(num_classes, dim, generator=g)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    features = centers[labels] + 0.5 * torch.randn(labels.numel(), dim, generator=g)
    return features.to(dtype), labels


def test_initialisation_is_xavier_normal_with_zero_bias():
    clf = SoftmaxClassifier(200, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(clf.linear.bias, torch.zeros(50))
    expected_std = (2 / (200 + 50)) ** 0.5
    assert clf.linear.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    log_probs = clf(torch.randn(4, 200))
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(4))


def test_initialisation_from_a_generator_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    state = torch.get_rng_state()
    clf = SoftmaxClassifier(6, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), state)
    # Xavier normal: N(0, 2 / (in + out)), the only draws from the generator.
    expected = torch.randn(4, 6, generator=torch.Generator().manual_seed(2)) * (2 / 10) ** 0.5
    torch.testing.assert_close(clf.linear.weight.detach(), expected)


def test_first_step_is_a_hand_computed_adam_step():
    features, labels = blobs(per_class=4, dim=5)
    lr = 0.01
    init = SoftmaxClassifier(5, 3, generator=torch.Generator().manual_seed(3))
    clf = train_softmax_classifier(
        features,
        labels,
        3,
        lr=lr,
        batch_size=12,
        epochs=1,
        generator=torch.Generator().manual_seed(3),
    )
    # gradient of the mean NLL of a linear softmax: (softmax - onehot)^T x / N
    with torch.no_grad():
        residual = torch.softmax(init.linear(features), 1) - torch.eye(3)[labels]
        grad_weight = residual.T @ features / len(labels)
        grad_bias = residual.mean(0)
    # Adam's first step is -lr * g / (|g| + eps) = -lr * sign(g) for |g| >> eps
    torch.testing.assert_close(
        clf.linear.weight, init.linear.weight - lr * grad_weight.sign(), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(clf.linear.bias, -lr * grad_bias.sign(), atol=1e-6, rtol=0)


def test_reaches_high_accuracy_on_separable_data(generator):
    features, labels = blobs()
    clf = train_softmax_classifier(
        features, labels, 3, lr=0.1, batch_size=32, epochs=8, generator=generator
    )
    test_features, test_labels = blobs(seed=0)
    assert (predict(clf, test_features) == test_labels).float().mean() > 0.95


def test_batch_larger_than_training_set_and_on_epoch():
    features, labels = blobs(per_class=3)
    seen = []
    clf = train_softmax_classifier(
        features,
        labels,
        3,
        lr=0.01,
        batch_size=1000,
        epochs=3,
        on_epoch=lambda epoch, model: seen.append((epoch, model)),
    )
    assert [epoch for epoch, _ in seen] == [0, 1, 2]
    assert all(model is clf for _, model in seen)


def test_deterministic_with_seeded_generator():
    features, labels = blobs()

    def run(seed):
        return train_softmax_classifier(
            features,
            labels,
            3,
            lr=0.01,
            batch_size=40,
            epochs=2,
            generator=torch.Generator().manual_seed(seed),
        ).linear.weight

    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


def test_dtype_follows_features():
    features, labels = blobs(dtype=torch.float64, per_class=3)
    clf = train_softmax_classifier(features, labels, 3, lr=0.01, batch_size=4, epochs=1)
    assert clf.linear.weight.dtype == torch.float64
    assert predict(clf, features).dtype == torch.long


def test_predict_batches_like_a_single_pass():
    clf = SoftmaxClassifier(4, 6)
    features = torch.randn(11, 4)
    expected = (features @ clf.linear.weight.T + clf.linear.bias).argmax(1)
    assert torch.equal(predict(clf, features, batch_size=3), expected)
    assert predict(clf, torch.zeros(0, 4)).shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"lr": 0.0}, ValueError),
        ({"batch_size": 0}, ValueError),
        ({"epochs": 0}, ValueError),
        ({"betas": (0.5, 1.0)}, ValueError),
        ({"betas": (0.5,)}, ValueError),
        ({"num_classes": 2}, ValueError),
        ({"on_epoch": "print"}, TypeError),
        ({"generator": 1}, TypeError),
    ],
)
def test_training_rejects_bad_arguments(kwargs, error):
    features, labels = blobs(per_class=2)
    params = {"num_classes": 3, "lr": 0.01, "batch_size": 4, "epochs": 1}
    params.update(kwargs)
    num_classes = params.pop("num_classes")
    with pytest.raises(error):
        train_softmax_classifier(features, labels, num_classes, **params)


def test_training_rejects_bad_data():
    features, labels = blobs(per_class=2)
    with pytest.raises(ValueError, match="6 entries"):
        train_softmax_classifier(features, labels[:5], 3, lr=0.1, batch_size=2, epochs=1)
    features[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        train_softmax_classifier(features, labels, 3, lr=0.1, batch_size=2, epochs=1)
    with pytest.raises(ValueError, match="at least one"):
        train_softmax_classifier(
            torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 3, lr=0.1, batch_size=2, epochs=1
        )


def test_predict_rejects_bad_arguments():
    with pytest.raises(TypeError):
        predict(lambda x: x, torch.zeros(2, 2))
    with pytest.raises(ValueError):
        predict(SoftmaxClassifier(2, 2), torch.zeros(2, 2), batch_size=0)
    with pytest.raises(ValueError):
        predict(SoftmaxClassifier(2, 2), torch.zeros(2))
