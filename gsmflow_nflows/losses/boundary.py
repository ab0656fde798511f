"""Boundary sample mining with entropy maximisation (GSMFlow, Sec. 3).

A relation network ``R(x, a)`` is trained on the seen classes; then every real
training feature is moved, by a few steps of gradient descent on the feature
itself, towards the decision boundary between the classes of its batch (higher
entropy of the class scores) while staying in its class (MSE to the one-hot
target). The mined "boundary samples" are appended to the flow's training set
and counter the variance collapse of the generated features.

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gsmflow_nflows._checks import (
    check_callable,
    check_generator,
    check_int,
    check_labels,
    check_matrix,
    check_positive,
    check_real,
)
from gsmflow_nflows.runtime import keep_global_rng, randperm, reset_linear

ProgressFn = Callable[[int, int], None]


class RelationNetwork(nn.Module):
    """``R(x, a) = sigmoid(Linear(H, 1)(ReLU(Linear(D + A, H)([x, a]))))``.

    Args:
        feature_dim: Visual feature dimension ``D``.
        embedding_dim: Class embedding dimension ``A``.
        hidden_features: Hidden width ``H`` (2048 in the paper).
        generator: source of PyTorch's default ``Linear`` initialisation; torch's
            global RNG is then left as it was. ``None``: the global RNG, as
            ``nn.Linear`` does. The parameters are created on the CPU.

    Example:
        >>> net = RelationNetwork(feature_dim=8, embedding_dim=3, hidden_features=16)
        >>> net.scores(torch.randn(5, 8), torch.randn(4, 3)).shape
        torch.Size([5, 4])
    """

    def __init__(
        self,
        feature_dim: int,
        embedding_dim: int,
        hidden_features: int = 2048,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.feature_dim = check_int("feature_dim", feature_dim, minimum=1)
        self.embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
        self.hidden_features = check_int("hidden_features", hidden_features, minimum=1)
        check_generator(generator)
        with keep_global_rng(enabled=generator is not None):
            self.hidden = nn.Linear(self.feature_dim + self.embedding_dim, self.hidden_features)
            self.output = nn.Linear(self.hidden_features, 1)
        if generator is not None:
            reset_linear(self.hidden, generator)
            reset_linear(self.output, generator)

    def forward(self, inputs: Tensor, class_embeddings: Tensor) -> Tensor:
        """Score aligned pairs: ``R(inputs[i], class_embeddings[i])``.

        Args:
            inputs: Features, shape ``[N, D]``.
            class_embeddings: One class embedding per feature, shape ``[N, A]``.

        Returns:
            Relation scores in ``(0, 1)``, shape ``[N]``.
        """
        inputs = check_matrix("inputs", inputs, columns=self.feature_dim, finite=False)
        class_embeddings = check_matrix(
            "class_embeddings",
            class_embeddings,
            columns=self.embedding_dim,
            rows=inputs.shape[0],
            finite=False,
        )
        hidden = F.relu(self.hidden(torch.cat([inputs, class_embeddings], dim=1)))
        return torch.sigmoid(self.output(hidden)).squeeze(1)

    def scores(self, x: Tensor, class_embeddings: Tensor) -> Tensor:
        """Score every sample against every class.

        The first layer is split into its ``x`` and ``a`` parts, so it costs
        ``B*H*D + K*H*A`` multiply-adds instead of ``B*K*(D+A)*H``; only the
        ReLU and the output layer work on the ``[B, K, H]`` grid.

        Args:
            x: Features, shape ``[B, D]``.
            class_embeddings: Class embeddings, shape ``[K, A]``.

        Returns:
            ``R(x[i], class_embeddings[k])`` at ``[i, k]``, shape ``[B, K]``.
        """
        x = check_matrix("x", x, columns=self.feature_dim, finite=False)
        class_embeddings = check_matrix(
            "class_embeddings", class_embeddings, columns=self.embedding_dim, finite=False
        )
        weight_x = self.hidden.weight[:, : self.feature_dim]
        weight_a = self.hidden.weight[:, self.feature_dim :]
        hidden_x = F.linear(x, weight_x, self.hidden.bias)  # [B, H]
        hidden_a = F.linear(class_embeddings, weight_a)  # [K, H]
        hidden = F.relu(hidden_x.unsqueeze(1) + hidden_a.unsqueeze(0))  # [B, K, H]
        return torch.sigmoid(self.output(hidden).squeeze(2))


def _check_training_set(
    features: Tensor, labels: Tensor, class_embeddings: Tensor, net: RelationNetwork
) -> tuple[Tensor, Tensor, Tensor]:
    features = check_matrix("features", features, columns=net.feature_dim)
    if features.shape[0] == 0:
        raise ValueError("Expected at least one training sample, got 0.")
    class_embeddings = check_matrix("class_embeddings", class_embeddings, columns=net.embedding_dim)
    labels = check_labels(
        "labels", labels, length=features.shape[0], num_classes=class_embeddings.shape[0]
    ).to(features.device)
    return features, labels, class_embeddings.to(features.device, features.dtype)


def _batch_targets(batch_labels: Tensor) -> tuple[Tensor, Tensor]:
    """Classes present in the batch and the one-hot target over them."""
    present, position = torch.unique(batch_labels, return_inverse=True)
    return present, F.one_hot(position, present.numel())


def train_relation_network(
    net: RelationNetwork,
    features: Tensor,
    labels: Tensor,
    class_embeddings: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
) -> list[float]:
    """Train the relation network on the seen classes (in place).

    Adam on ``net``'s parameters. Each epoch visits the shuffled training set in
    ``ceil(N / batch_size)`` batches (the last may be smaller; ``batch_size`` larger
    than ``N`` means one batch). For each batch every sample is scored against
    every class present in the batch, and the MSE to the one-hot target is minimised.

    Args:
        net: The relation network; it must already be on the features' device/dtype.
        features: Seen training features, shape ``[N, D]``.
        labels: Their class ids, shape ``[N]``, indexing ``class_embeddings``.
        class_embeddings: Embeddings of the seen classes, shape ``[S, A]``.
        epochs: Number of epochs, ``>= 1``.
        batch_size: Batch size, ``>= 1``.
        lr: Adam learning rate, ``> 0``.
        weight_decay: Adam weight decay, ``>= 0``.
        generator: Source of the shuffling; ``None`` uses torch's global RNG.
        progress: Called as ``progress(done, total)`` after every batch, with
            ``total = epochs * ceil(N / batch_size)``.

    Returns:
        The mean training loss of every epoch (``epochs`` floats).

    Example:
        >>> net = RelationNetwork(feature_dim=8, embedding_dim=3, hidden_features=16)
        >>> x, y = torch.randn(12, 8), torch.arange(12) % 3
        >>> losses = train_relation_network(
        ...     net, x, y, torch.eye(3), epochs=2, batch_size=4, lr=1e-3, weight_decay=0.0
        ... )
        >>> len(losses)
        2
    """
    if not isinstance(net, RelationNetwork):
        raise TypeError(f"Expected net to be a RelationNetwork, got {type(net).__name__}.")
    epochs = check_int("epochs", epochs, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    lr = check_positive("lr", lr)
    weight_decay = check_real("weight_decay", weight_decay, minimum=0.0)
    check_generator(generator)
    check_callable("progress", progress)
    features, labels, class_embeddings = _check_training_set(
        features, labels, class_embeddings, net
    )

    num_samples = features.shape[0]
    batch_size = min(batch_size, num_samples)
    num_batches = -(-num_samples // batch_size)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    epoch_losses = []
    for epoch in range(epochs):
        order = randperm(num_samples, generator, features.device)
        total = 0.0
        for batch in range(num_batches):
            index = order[batch * batch_size : (batch + 1) * batch_size]
            present, target = _batch_targets(labels[index])
            scores = net.scores(features[index], class_embeddings[present])
            loss = F.mse_loss(scores, target.to(scores.dtype))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * index.numel()
            if progress is not None:
                progress(epoch * num_batches + batch + 1, epochs * num_batches)
        epoch_losses.append(total / num_samples)
    return epoch_losses


def _entropy(scores: Tensor) -> Tensor:
    """Mean over samples of the entropy of ``softmax(scores)`` over the classes."""
    log_probs = F.log_softmax(scores, dim=1)
    return -(log_probs.exp() * log_probs).sum(dim=1).mean()


class BoundarySampleMiner:
    """Mine boundary samples with a trained relation network (entropy maximisation).

    One pass over the (shuffled) training set, batch by batch. Each batch starts
    from the real features ``x`` and takes ``loops`` SGD steps (``lr``, ``momentum``)
    on the input ``x'`` to minimise
    ``MSE(R(x', C_b), onehot) - entropy_weight * H(softmax(R(x', C_b)))``,
    with ``C_b`` the classes present in the batch and ``H`` the entropy over them
    (mean over the batch's samples). Both terms are batch means, as in the
    authors' code, so the per-sample step scales with ``1 / batch size``: the
    published ``aug_lr`` values (20 to 100) assume that. The relation network
    is frozen during mining (its ``requires_grad`` flags and train/eval mode
    are restored afterwards) and receives no gradient.

    Args:
        relation_net: A trained :class:`RelationNetwork`.
        loops: SGD steps per batch (``loops_adv``), ``>= 0``; 0 returns copies.
        lr: SGD learning rate on the inputs (``aug_lr``), ``> 0``.
        momentum: SGD momentum (``aug_mt``), ``>= 0``.
        entropy_weight: Weight of the entropy term, ``>= 0``.
        batch_size: Batch size, ``>= 1`` (clamped to the number of samples).

    Example:
        >>> net = RelationNetwork(feature_dim=8, embedding_dim=3, hidden_features=16)
        >>> x, y = torch.randn(12, 8), torch.arange(12) % 3
        >>> miner = BoundarySampleMiner(
        ...     net, loops=2, lr=30.0, momentum=0.0, entropy_weight=10.0, batch_size=200
        ... )
        >>> mined_x, mined_y = miner.mine(x, y, torch.eye(3))
        >>> mined_x.shape, bool((mined_y == y).all())
        (torch.Size([12, 8]), True)
    """

    def __init__(
        self,
        relation_net: RelationNetwork,
        *,
        loops: int,
        lr: float,
        momentum: float,
        entropy_weight: float,
        batch_size: int,
    ) -> None:
        if not isinstance(relation_net, RelationNetwork):
            raise TypeError(
                f"Expected relation_net to be a RelationNetwork, got {type(relation_net).__name__}."
            )
        self.relation_net = relation_net
        self.loops = check_int("loops", loops, minimum=0)
        self.lr = check_positive("lr", lr)
        self.momentum = check_real("momentum", momentum, minimum=0.0)
        self.entropy_weight = check_real("entropy_weight", entropy_weight, minimum=0.0)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)

    def mine(
        self,
        features: Tensor,
        labels: Tensor,
        class_embeddings: Tensor,
        generator: torch.Generator | None = None,
        progress: ProgressFn | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Mine one boundary sample per training feature.

        Args:
            features: Real seen training features, shape ``[N, D]``.
            labels: Their class ids, shape ``[N]``, indexing ``class_embeddings``.
            class_embeddings: Embeddings of the seen classes, shape ``[S, A]``.
            generator: Source of the shuffling that forms the batches; ``None``
                uses torch's global RNG.
            progress: Called as ``progress(done, total)`` after every batch.

        Returns:
            ``(mined_features, mined_labels)``: detached features of shape
            ``[N, D]`` in the ORIGINAL order (row ``i`` is mined from
            ``features[i]``) and a copy of ``labels`` (as int64). Append them to
            the real training set.
        """
        check_generator(generator)
        check_callable("progress", progress)
        net = self.relation_net
        features, labels, class_embeddings = _check_training_set(
            features, labels, class_embeddings, net
        )
        num_samples = features.shape[0]
        batch_size = min(self.batch_size, num_samples)
        num_batches = -(-num_samples // batch_size)
        order = randperm(num_samples, generator, features.device)
        mined = features.detach().clone()

        flags = [p.requires_grad for p in net.parameters()]
        was_training = net.training
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        try:
            with torch.enable_grad():
                for batch in range(num_batches):
                    index = order[batch * batch_size : (batch + 1) * batch_size]
                    mined[index] = self._mine_batch(
                        features[index], labels[index], class_embeddings
                    )
                    if progress is not None:
                        progress(batch + 1, num_batches)
        finally:
            for p, flag in zip(net.parameters(), flags, strict=True):
                p.requires_grad_(flag)
            net.train(was_training)
        return mined, labels.clone()

    def _mine_batch(self, x: Tensor, batch_labels: Tensor, class_embeddings: Tensor) -> Tensor:
        present, target = _batch_targets(batch_labels)
        batch_embeddings = class_embeddings[present].detach()
        target = target.to(x.dtype)
        inputs = x.detach().clone().requires_grad_(True)
        optimizer = torch.optim.SGD([inputs], lr=self.lr, momentum=self.momentum)
        for _ in range(self.loops):
            scores = self.relation_net.scores(inputs, batch_embeddings)
            loss = F.mse_loss(scores, target) - self.entropy_weight * _entropy(scores)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return inputs.detach()
