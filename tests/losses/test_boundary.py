import pytest
import torch

from gsmflow_nflows.losses import BoundarySampleMiner, RelationNetwork, train_relation_network

NUM_CLASSES, DIM, EMB, PER_CLASS = 3, 4, 3, 20


def toy_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = 2 * torch.randn(NUM_CLASSES, DIM, generator=g)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(PER_CLASS)
    features = centers[labels] + 0.3 * torch.randn(labels.numel(), DIM, generator=g)
    return features, labels, torch.eye(NUM_CLASSES)


def entropy(scores):
    return -(scores.softmax(1) * scores.log_softmax(1)).sum(1)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    features, labels, embeddings = toy_data()
    net = RelationNetwork(DIM, EMB, hidden_features=16)
    losses = train_relation_network(
        net,
        features,
        labels,
        embeddings,
        epochs=25,
        batch_size=16,
        lr=1e-2,
        weight_decay=0.0,
        generator=torch.Generator().manual_seed(0),
    )
    return net, features, labels, embeddings, losses


def test_scores_equal_naive_pairwise_loop():
    net = RelationNetwork(5, 3, hidden_features=7).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    a = torch.randn(6, 3, dtype=torch.float64)
    w1, b1 = net.hidden.weight, net.hidden.bias
    w2, b2 = net.output.weight[0], net.output.bias[0]
    expected = torch.empty(4, 6, dtype=torch.float64)
    for i in range(4):
        for k in range(6):
            pair = torch.cat([x[i], a[k]])
            hidden = torch.clamp(w1 @ pair + b1, min=0)
            expected[i, k] = 1 / (1 + torch.exp(-(w2 @ hidden + b2)))
    scores = net.scores(x, a)
    torch.testing.assert_close(scores, expected)
    # forward scores aligned pairs: the diagonal of the grid for square inputs
    torch.testing.assert_close(net(x, a[:4]), expected[torch.arange(4), torch.arange(4)])


def test_training_reduces_loss_and_separates_classes(trained):
    net, features, labels, embeddings, losses = trained
    assert len(losses) == 25
    assert losses[-1] < 0.2 * losses[0]
    with torch.no_grad():
        accuracy = (net.scores(features, embeddings).argmax(1) == labels).float().mean()
    assert accuracy > 0.95


def test_training_reports_progress_and_handles_batch_larger_than_n():
    features, labels, embeddings = toy_data()
    calls = []
    net = RelationNetwork(DIM, EMB, hidden_features=4)
    losses = train_relation_network(
        net,
        features,
        labels,
        embeddings,
        epochs=2,
        batch_size=1000,
        lr=1e-3,
        weight_decay=1e-4,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert len(losses) == 2
    assert calls == [(1, 2), (2, 2)]


def test_mining_raises_entropy_keeps_class_and_freezes_net(trained):
    net, features, labels, embeddings, _ = trained
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for p in net.parameters():
        p.grad = None
    miner = BoundarySampleMiner(
        net, loops=10, lr=50.0, momentum=0.5, entropy_weight=5.0, batch_size=60
    )
    calls = []
    mined, mined_labels = miner.mine(
        features,
        labels,
        embeddings,
        generator=torch.Generator().manual_seed(0),
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(1, 1)]
    assert not mined.requires_grad
    assert torch.equal(mined_labels, labels)
    assert (mined - features).norm(dim=1).min() > 0
    with torch.no_grad():
        before_scores, after_scores = (
            net.scores(features, embeddings),
            net.scores(mined, embeddings),
        )
    gain = entropy(after_scores) - entropy(before_scores)
    assert (gain > 0).float().mean() > 0.95
    assert gain.mean() > 0.01
    assert torch.equal(after_scores.argmax(1), labels)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(p.requires_grad and p.grad is None for p in net.parameters())


def test_mining_with_zero_loops_returns_copies(trained):
    net, features, labels, embeddings, _ = trained
    miner = BoundarySampleMiner(
        net, loops=0, lr=1.0, momentum=0.0, entropy_weight=1.0, batch_size=7
    )
    mined, mined_labels = miner.mine(features, labels, embeddings)
    assert torch.equal(mined, features)
    assert mined.data_ptr() != features.data_ptr()
    assert torch.equal(mined_labels, labels)


def test_mining_is_deterministic_with_generator(trained):
    net, features, labels, embeddings, _ = trained
    miner = BoundarySampleMiner(
        net, loops=2, lr=5.0, momentum=0.0, entropy_weight=1.0, batch_size=16
    )
    a, _ = miner.mine(features, labels, embeddings, generator=torch.Generator().manual_seed(3))
    b, _ = miner.mine(features, labels, embeddings, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"loops": -1}, ValueError),
        ({"loops": 1.5}, TypeError),
        ({"lr": 0.0}, ValueError),
        ({"momentum": -0.1}, ValueError),
        ({"entropy_weight": float("inf")}, ValueError),
        ({"batch_size": 0}, ValueError),
    ],
)
def test_miner_rejects_bad_hyperparameters(kwargs, error):
    params = {"loops": 1, "lr": 1.0, "momentum": 0.0, "entropy_weight": 1.0, "batch_size": 4}
    params.update(kwargs)
    with pytest.raises(error):
        BoundarySampleMiner(RelationNetwork(2, 2, hidden_features=2), **params)


def test_miner_rejects_non_relation_network():
    with pytest.raises(TypeError, match="RelationNetwork"):
        BoundarySampleMiner(
            torch.nn.Linear(2, 1), loops=1, lr=1.0, momentum=0.0, entropy_weight=1.0, batch_size=4
        )


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"epochs": 0}, ValueError),
        ({"batch_size": 0}, ValueError),
        ({"lr": -1.0}, ValueError),
        ({"weight_decay": -1.0}, ValueError),
        ({"generator": 5}, TypeError),
        ({"progress": 5}, TypeError),
    ],
)
def test_training_rejects_bad_hyperparameters(kwargs, error):
    params = {"epochs": 1, "batch_size": 4, "lr": 1e-3, "weight_decay": 0.0}
    params.update(kwargs)
    features, labels, embeddings = toy_data()
    with pytest.raises(error):
        train_relation_network(
            RelationNetwork(DIM, EMB, hidden_features=2), features, labels, embeddings, **params
        )


@pytest.mark.parametrize(
    ("features", "labels", "embeddings", "match"),
    [
        (
            torch.randn(5, 3),
            torch.zeros(5, dtype=torch.long),
            torch.eye(3),
            "with 4 features, got 3",
        ),
        (torch.randn(5, 4), torch.zeros(4, dtype=torch.long), torch.eye(3), "5 entries"),
        (torch.randn(5, 4), torch.full((5,), 3), torch.eye(3), r"\[0, 2\]"),
        (
            torch.randn(5, 4),
            torch.zeros(5, dtype=torch.long),
            torch.eye(2),
            "with 3 features, got 2",
        ),
        (
            torch.full((5, 4), float("nan")),
            torch.zeros(5, dtype=torch.long),
            torch.eye(3),
            "finite",
        ),
        (torch.randn(0, 4), torch.zeros(0, dtype=torch.long), torch.eye(3), "at least one"),
    ],
)
def test_rejects_mismatched_data(features, labels, embeddings, match):
    net = RelationNetwork(DIM, EMB, hidden_features=2)
    with pytest.raises(ValueError, match=match):
        train_relation_network(
            net, features, labels, embeddings, epochs=1, batch_size=2, lr=1e-3, weight_decay=0.0
        )
    miner = BoundarySampleMiner(
        net, loops=1, lr=1.0, momentum=0.0, entropy_weight=1.0, batch_size=2
    )
    with pytest.raises(ValueError, match=match):
        miner.mine(features, labels, embeddings)


def test_relation_network_rejects_bad_shapes():
    net = RelationNetwork(4, 3, hidden_features=2)
    with pytest.raises(ValueError, match="with 4 features, got 5"):
        net.scores(torch.randn(2, 5), torch.randn(3, 3))
    with pytest.raises(ValueError, match="with 3 features, got 2"):
        net.scores(torch.randn(2, 4), torch.randn(3, 2))
    with pytest.raises(ValueError, match="2 rows"):
        net(torch.randn(2, 4), torch.randn(3, 3))
    with pytest.raises(ValueError):
        RelationNetwork(0, 3)


def test_relation_network_init_from_a_generator_only():
    torch.manual_seed(11)
    state = torch.get_rng_state()
    net = RelationNetwork(5, 3, hidden_features=7, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    # PyTorch's default Linear init, U(-1/sqrt(in), 1/sqrt(in)), weight then bias, layer by layer.
    g = torch.Generator().manual_seed(8)
    for layer, fan_in in ((net.hidden, 8), (net.output, 7)):
        bound = 1 / fan_in**0.5
        for parameter in (layer.weight, layer.bias):
            expected = torch.rand(parameter.shape, generator=g) * 2 * bound - bound
            torch.testing.assert_close(parameter.detach(), expected, rtol=0, atol=0)
    with pytest.raises(TypeError, match="generator"):
        RelationNetwork(5, 3, generator=8)
